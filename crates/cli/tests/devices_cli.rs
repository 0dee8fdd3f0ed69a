//! `--backend`, `--device` and `run.device` end to end: a device the backend does not have is
//! refused with the list of those it has, each checkpoint records where it was trained and
//! `dacapo runs show` says so; with `--features tch`, a run moves between flex and libtorch
//! and `dacapo` finds libtorch without `LD_LIBRARY_PATH`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

mod tiny;

/// `dacapo` with `args` in `dir`, without any `LD_LIBRARY_PATH` (libtorch comes from the rpath).
fn dacapo(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_dacapo"))
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn succeeds(dir: &Path, args: &[&str]) -> String {
    let out = dacapo(dir, args, &[]);
    assert!(out.status.success(), "dacapo {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// A directory with the config `run.toml` of run `name` (4 steps, checkpoints every 2).
fn setup(name: &str, validate: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = tiny::config(
        name,
        &dir.path().join("runs"),
        &dir.path().join("data.zarr"),
        (4, 2),
        validate,
        "",
    );
    std::fs::write(dir.path().join("run.toml"), text).unwrap();
    dir
}

#[test]
fn a_device_the_backend_lacks_is_refused_with_the_devices_it_has() {
    let dir = setup("devices", false);
    let train = ["train", "--no-progress", "run.toml"];
    for (args, env) in [
        (&["--device", "cuda:0"][..], &[][..]),
        (&[][..], &[("DACAPO__RUN__DEVICE", "vulkan:0")][..]),
    ] {
        let out = dacapo(dir.path(), &[&train[..], args].concat(), env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("backend `flex` has no device") && err.contains("it sees: cpu"),
            "{err}"
        );
    }
    let out = dacapo(
        dir.path(),
        &[&train[..], &["--device", "gpu"]].concat(),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("\"gpu\"") && err.contains("cuda:N"), "{err}");
    assert!(
        !dir.path().join("runs/devices/checkpoints").exists(),
        "nothing may be trained"
    );
}

#[test]
fn runs_show_says_where_each_checkpoint_was_trained() {
    let dir = setup("shown", false);
    succeeds(
        dir.path(),
        &["train", "--no-progress", "--device", "cpu", "run.toml"],
    );
    let text = succeeds(dir.path(), &["runs", "show", "shown"]);
    assert!(text.contains("trained on:  flex cpu (2, 4)"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&succeeds(dir.path(), &["runs", "show", "shown", "--json"])).unwrap();
    assert_eq!(
        json["trained_on"][1],
        serde_json::json!({"iteration": 4, "backend": "flex", "device": "cpu"})
    );
}

#[cfg(feature = "tch")]
#[test]
fn a_run_moves_between_flex_and_libtorch() {
    let dir = setup("moved", true);
    let train = |until: &str, backend: &str| {
        let out = dacapo(
            dir.path(),
            &[
                "train",
                "--no-progress",
                "--backend",
                backend,
                "--device",
                "cpu",
                "run.toml",
            ],
            &[("DACAPO__RUN__TRAIN_UNTIL", until)],
        );
        assert!(out.status.success(), "training on {backend} to {until}");
    };
    train("2", "flex");
    train("4", "tch");
    train("6", "flex");
    let text = succeeds(dir.path(), &["runs", "show", "moved"]);
    assert!(
        text.contains("trained on:  flex cpu (2), tch cpu (4), flex cpu (6)"),
        "{text}"
    );
    // Validating libtorch's checkpoint on flex, and flex's on libtorch.
    succeeds(
        dir.path(),
        &["validate", "--run", "moved", "--iteration", "4"],
    );
    succeeds(
        dir.path(),
        &[
            "validate",
            "--run",
            "moved",
            "--iteration",
            "6",
            "--backend",
            "tch",
        ],
    );
    let out = dacapo(
        dir.path(),
        &[
            "validate",
            "--run",
            "moved",
            "--backend",
            "tch",
            "--device",
            "cuda:7",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("backend `tch` has no device `cuda:7`"),
        "{err}"
    );
    assert!(err.contains("it sees: cpu"), "{err}");
}
