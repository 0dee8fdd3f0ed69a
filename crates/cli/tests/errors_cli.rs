//! What `dacapo train` says when the input is wrong: each message names the problem (file,
//! key, array, feature, holder) and the fix, and nothing is trained.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

mod tiny;

fn config(root: &Path, data: &Path) -> String {
    tiny::config("errors", root, data, (4, 2), false, "")
}

/// Runs `dacapo train` on `text` (and `extra` arguments); returns its stderr, asserting failure.
fn train_fails(dir: &Path, text: &str, extra: &[&str]) -> String {
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dacapo"))
        .args(["train", "--no-progress"])
        .args(extra)
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{err}");
    assert!(!out.status.success(), "expected a failure: {err}");
    assert!(
        !dir.join("runs/errors/checkpoints").exists(),
        "nothing may be trained: {err}"
    );
    err
}

fn setup() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = config(&dir.path().join("runs"), &dir.path().join("data.zarr"));
    (dir, text)
}

#[test]
fn a_typo_in_a_key_names_the_key_the_file_and_the_line() {
    let (dir, text) = setup();
    let err = train_fails(
        dir.path(),
        &text.replace("train_until", "train_untill"),
        &[],
    );
    assert!(err.contains("train_untill"), "{err}");
    assert!(err.contains("run.toml"), "{err}");
    assert!(err.contains("line 3") || err.contains(":3:"), "{err}");
    assert!(
        err.contains("train_until"),
        "the expected keys are listed: {err}"
    );
}

#[test]
fn a_missing_zarr_array_names_the_container_and_the_array() {
    let (dir, text) = setup();
    let err = train_fails(
        dir.path(),
        &text.replace("raw = \"raw\"", "raw = \"raw_typo\""),
        &[],
    );
    assert!(err.contains("raw_typo"), "{err}");
    assert!(err.contains("data.zarr"), "{err}");
}

#[test]
fn an_unknown_or_missing_backend_names_the_choices_or_the_feature() {
    let (dir, text) = setup();
    let err = train_fails(
        dir.path(),
        &text.replace(
            "validation_interval = 2\n",
            "validation_interval = 2\nbackend = \"metal\"\n",
        ),
        &[],
    );
    assert!(err.contains("metal") && err.contains("flex"), "{err}");
    if !cfg!(feature = "cuda") {
        let err = train_fails(dir.path(), &text, &["--backend", "cuda"]);
        assert!(
            err.contains("--features cuda") || err.contains("feature"),
            "{err}"
        );
        assert!(err.contains("cuda"), "{err}");
    }
}

#[test]
fn a_run_name_with_a_slash_is_refused() {
    let (dir, text) = setup();
    let err = train_fails(
        dir.path(),
        &text.replace("name = \"errors\"", "name = \"lab/errors\""),
        &[],
    );
    assert!(err.contains("lab/errors"), "{err}");
    assert!(
        err.contains("invalid run name") && err.contains("line 2"),
        "{err}"
    );
    assert!(
        err.contains("use 1 to 128 characters"),
        "the fix is named: {err}"
    );
}

#[test]
fn a_locked_run_names_the_process_holding_it() {
    let (dir, text) = setup();
    let root = dir.path().join("runs");
    let _lock = dacapo_store::RunLock::acquire(&root, "errors").unwrap();
    let err = train_fails(dir.path(), &text, &[]);
    assert!(err.contains("locked"), "{err}");
    assert!(err.contains(&std::process::id().to_string()), "{err}");
}
