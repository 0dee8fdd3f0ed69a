//! What `dacapo train` says when the input is wrong: each message names the problem (file,
//! key, array, feature, holder) and the fix, and nothing is trained.

use std::path::Path;

use crate::util::{dacapo, fails, run_name, tiny};

/// Runs `dacapo train` on `text` (and `extra` arguments); returns its stderr, asserting
/// that it failed and trained nothing.
fn train_fails(dir: &Path, text: &str, extra: &[&str]) -> String {
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, text).unwrap();
    let err = fails(
        &dacapo()
            .arg("train")
            .args(extra)
            .arg(&cfg)
            .output()
            .unwrap(),
    );
    assert!(
        !dir.join("runs/errors/checkpoints").exists(),
        "nothing may be trained: {err}"
    );
    err
}

/// A temp dir and the TOML text of the tiny run `errors` in it.
fn setup() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = tiny(dir.path(), "errors").toml();
    assert!(
        text.starts_with("[run]\nname = \"errors\"\ntrain_until = "),
        "{text}"
    );
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
    assert!(err.contains("`train_untill`"), "{err}");
    assert!(err.contains("run.toml"), "{err}");
    assert!(err.contains("line 3") || err.contains(":3:"), "{err}");
    // The keys that would be right are listed; the typo itself contains `train_until`, so
    // only the quoted name (closing quote right after it) shows the list.
    assert!(
        err.contains("`train_until`") && err.contains("`validation_interval`"),
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
    let metal = text.replace("backend = \"flex\"", "backend = \"metal\"");
    assert_ne!(metal, text);
    let err = train_fails(dir.path(), &metal, &[]);
    assert!(err.contains("metal") && err.contains("flex"), "{err}");
    if !cfg!(feature = "cuda") {
        let err = train_fails(dir.path(), &text, &["--backend", "cuda"]);
        assert!(err.contains("--features cuda"), "{err}");
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
    let _lock = dacapo_store::RunLock::acquire(&root, &run_name("errors")).unwrap();
    let err = train_fails(dir.path(), &text, &[]);
    assert!(err.contains("locked"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
}
