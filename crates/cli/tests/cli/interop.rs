//! `dacapo import-torch` and `dacapo export` against PyTorch files written by
//! `fixtures/torch/make_fixtures.py` (a DaCapo checkpoint, an older DaCapo state dict, and the
//! same values under dacapo-rs names), and the exported file read back by Python's
//! `safetensors.numpy` where it is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dacapo_core::TensorMap;
use dacapo_core::config::ArchitectureConfig;
use dacapo_core::testing::TinyRun;
use dacapo_store::{LocalWeightsStore, WeightsStore, read_safetensors_file};

use crate::util::{fails, fixture, ok, run, run_name, tiny};

/// A run of the fixtures' network: 2D, fmaps 4, one 2x2 downsampling, a one-channel head.
fn network(dir: &Path) -> TinyRun {
    tiny(dir, "imported").schedule(10, 5).validate()
}

/// A temp dir holding the fixture network's config; its path and the store root.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let run = network(dir.path());
    let config = run.write(dir.path());
    let root = run.build().stores.root;
    (dir, config, root)
}

fn import(file: &str, config: &Path, root: &Path, iteration: u64) -> Output {
    run(&[
        "import-torch",
        fixture(file).to_str().unwrap(),
        "--run",
        "imported",
        "--iteration",
        &iteration.to_string(),
        "--config",
        config.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ])
}

fn expected() -> TensorMap {
    read_safetensors_file(&fixture("expected.safetensors"))
        .unwrap()
        .0
}

fn assert_same_tensors(actual: &TensorMap, expected: &TensorMap) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (name, t) in expected {
        let a = &actual[name];
        assert_eq!(a.shape, t.shape, "{name}");
        assert_eq!(a.dtype, t.dtype, "{name}");
        assert!(a.data == t.data, "{name}: values differ");
    }
}

#[test]
fn dacapo_checkpoint_and_legacy_state_dict_import_to_the_same_weights() {
    let (_dir, config, root) = setup();
    let out = ok(&import("dacapo_checkpoint.pt", &config, &root, 100));
    assert!(out.contains("checkpoint 100"), "{out}");
    ok(&import("legacy_state_dict.pt", &config, &root, 200));

    let store = LocalWeightsStore::new(&root);
    assert_eq!(
        store.iterations(&run_name("imported")).unwrap(),
        vec![100, 200]
    );
    let expected = expected();
    for iteration in [100, 200] {
        let weights = store
            .retrieve_weights(&run_name("imported"), iteration)
            .unwrap();
        assert_same_tensors(&weights.model, &expected);
        assert_eq!(weights.state.iteration, iteration);
        assert!(
            weights.optimizer.is_empty(),
            "imports start a fresh optimizer"
        );
    }
    assert!(root.join("imported/run.toml").exists(), "new run frozen");
}

#[test]
fn a_network_that_does_not_fit_is_refused_with_the_reason() {
    let (_dir, config, root) = setup();
    let err = fails(&import("cnnectome_layout.pt", &config, &root, 100));
    assert!(err.contains("does not fit the network"), "{err}");
    assert!(err.contains("upsample_channel_contraction"), "{err}");
    assert!(
        LocalWeightsStore::new(&root)
            .iterations(&run_name("imported"))
            .map(|i| i.is_empty())
            .unwrap_or(true),
        "nothing stored"
    );

    let wrong = network(config.parent().unwrap())
        .with(|c| {
            let ArchitectureConfig::Unet(u) = &mut c.architecture;
            u.fmaps = 6;
        })
        .toml();
    let wrong_path = config.with_file_name("wrong.toml");
    std::fs::write(&wrong_path, wrong).unwrap();
    let err = fails(&import("dacapo_checkpoint.pt", &wrong_path, &root, 100));
    assert!(
        err.contains("fix: give the run the [architecture]"),
        "{err}"
    );
}

#[test]
fn export_writes_the_checkpoint_under_pytorch_names() {
    let (dir, config, root) = setup();
    ok(&import("dacapo_checkpoint.pt", &config, &root, 100));
    let root_s = root.to_str().unwrap();
    let file = dir.path().join("model.safetensors");
    let file_s = file.to_str().unwrap();
    let args = [
        "export",
        "--run",
        "imported",
        "--iteration",
        "100",
        "-o",
        file_s,
        "--root",
        root_s,
    ];
    ok(&run(&args));
    let (tensors, meta) = read_safetensors_file(&file).unwrap();
    assert_same_tensors(&tensors, &expected());
    assert_eq!(meta["format"], "pt");
    assert_eq!(meta["run"], "imported");
    assert_eq!(meta["iteration"], "100");

    // An existing file is kept unless --force.
    let err = fails(&run(&args));
    assert!(err.contains("--force"), "{err}");

    // DaCapo's current `Model` names: `chain.0.*` for the U-Net, the head twice.
    let chain = dir.path().join("chain.safetensors");
    let mut chain_args = args.to_vec();
    chain_args[6] = chain.to_str().unwrap();
    chain_args.extend(["--names", "chain"]);
    ok(&run(&chain_args));
    let (named, _) = read_safetensors_file(&chain).unwrap();
    let expected = expected();
    for (name, t) in &expected {
        let renamed = name
            .strip_prefix("architecture.unet.")
            .map(|rest| format!("chain.0.{rest}"))
            .unwrap_or_else(|| name.clone());
        assert!(named[&renamed].data == t.data, "{renamed}");
        if let Some(rest) = name.strip_prefix("prediction_head.") {
            assert!(named[&format!("chain.1.{rest}")].data == t.data);
        }
    }

    // A checkpoint that does not exist is named, with what exists.
    let missing = dir.path().join("missing.safetensors");
    let mut missing_args = args.to_vec();
    missing_args[4] = "7";
    missing_args[6] = missing.to_str().unwrap();
    let err = fails(&run(&missing_args));
    assert!(
        err.contains("no committed checkpoint 7") && err.contains("[100]"),
        "{err}"
    );
    assert!(!missing.exists());

    python_reads(&file, &expected);
}

/// Python's `safetensors.numpy` reads the exported file with the same names, shapes and sums.
fn python_reads(file: &Path, expected: &TensorMap) {
    let probe = Command::new("python3")
        .args(["-c", "import numpy, safetensors.numpy"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED the Python check of the export: python3 with numpy and safetensors is not \
             installed (pip install numpy safetensors)"
        );
        return;
    }
    let script = "import json, sys\n\
        from safetensors.numpy import load_file\n\
        d = load_file(sys.argv[1])\n\
        print(json.dumps({k: [list(v.shape), str(v.dtype), float(v.astype('float64').sum())] \
        for k, v in d.items()}))";
    let out = Command::new("python3")
        .args(["-c", script, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen.len(), expected.len());
    for (name, t) in expected {
        let entry = seen[name].as_array().unwrap();
        let shape: Vec<usize> = serde_json::from_value(entry[0].clone()).unwrap();
        assert_eq!(shape, t.shape, "{name}");
        assert_eq!(entry[1], "float32", "{name}");
        let sum: f64 = t
            .data
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .sum();
        let py = entry[2].as_f64().unwrap();
        assert!(
            (py - sum).abs() <= 1e-9 * (1.0 + sum.abs()),
            "{name}: {py} vs {sum}"
        );
    }
}
