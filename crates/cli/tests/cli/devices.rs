//! `--backend`, `--device` and `run.device` end to end: a device the backend does not have is
//! refused with the list of those it has, each checkpoint records where it was trained and
//! `dacapo runs show` says so; with `--features tch`, a run moves between flex and libtorch
//! and `dacapo` finds libtorch without `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::{fails, ok, tiny};

/// `dacapo args...` with `env`, without any `LD_LIBRARY_PATH` (libtorch comes from the rpath).
fn dacapo(args: &[&str], env: &[(&str, &str)]) -> Output {
    crate::util::dacapo()
        .args(args)
        .envs(env.iter().copied())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}

/// The config file of the tiny run `name` under `dir` (4 steps, checkpoints every 2).
fn setup(dir: &Path, name: &str, validate: bool) -> PathBuf {
    let run = tiny(dir, name);
    let run = if validate { run.validate() } else { run };
    run.write(dir)
}

#[test]
fn a_device_the_backend_lacks_is_refused_with_the_devices_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "devices", false);
    let config = config.to_str().unwrap();
    let train = ["train", "--no-progress", config];
    for (args, env) in [
        (&["--device", "cuda:0"][..], &[][..]),
        (&[][..], &[("DACAPO__RUN__DEVICE", "vulkan:0")][..]),
    ] {
        let err = fails(&dacapo(&[&train[..], args].concat(), env));
        assert!(
            err.contains("backend `flex` has no device") && err.contains("it sees: cpu"),
            "{err}"
        );
    }
    let err = fails(&dacapo(&[&train[..], &["--device", "gpu"]].concat(), &[]));
    assert!(err.contains("\"gpu\"") && err.contains("cuda:N"), "{err}");
    assert!(
        !dir.path().join("runs/devices/checkpoints").exists(),
        "nothing may be trained"
    );
}

#[test]
fn runs_show_says_where_each_checkpoint_was_trained() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "shown", false);
    let root = dir.path().join("runs");
    let root = root.to_str().unwrap();
    ok(&dacapo(
        &[
            "train",
            "--no-progress",
            "--device",
            "cpu",
            config.to_str().unwrap(),
        ],
        &[],
    ));
    let text = ok(&dacapo(&["runs", "show", "shown", "--root", root], &[]));
    assert!(text.contains("trained on:  flex cpu (2, 4)"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&ok(&dacapo(
        &["runs", "show", "shown", "--json", "--root", root],
        &[],
    )))
    .unwrap();
    assert_eq!(
        json["trained_on"][1],
        serde_json::json!({"iteration": 4, "backend": "flex", "device": "cpu"})
    );
}

#[cfg(feature = "tch")]
#[test]
fn a_run_moves_between_flex_and_libtorch() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "moved", true);
    let config = config.to_str().unwrap();
    let root = dir.path().join("runs");
    let root = root.to_str().unwrap();
    let train = |until: &str, backend: &str| {
        let out = dacapo(
            &[
                "train",
                "--no-progress",
                "--backend",
                backend,
                "--device",
                "cpu",
                config,
            ],
            &[("DACAPO__RUN__TRAIN_UNTIL", until)],
        );
        ok(&out);
    };
    train("2", "flex");
    train("4", "tch");
    train("6", "flex");
    let text = ok(&dacapo(&["runs", "show", "moved", "--root", root], &[]));
    assert!(
        text.contains("trained on:  flex cpu (2), tch cpu (4), flex cpu (6)"),
        "{text}"
    );
    // Validating libtorch's checkpoint on flex, and flex's on libtorch.
    let validate = [
        "validate",
        "--no-progress",
        "--run",
        "moved",
        "--root",
        root,
    ];
    ok(&dacapo(
        &[&validate[..], &["--iteration", "4"]].concat(),
        &[],
    ));
    ok(&dacapo(
        &[&validate[..], &["--iteration", "6", "--backend", "tch"]].concat(),
        &[],
    ));
    let err = fails(&dacapo(
        &[&validate[..], &["--backend", "tch", "--device", "cuda:7"]].concat(),
        &[],
    ));
    assert!(
        err.contains("backend `tch` has no device `cuda:7`"),
        "{err}"
    );
    assert!(err.contains("it sees: cpu"), "{err}");
}
