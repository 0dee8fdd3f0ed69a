use super::*;

const MINIMAL: &str = r#"
[run]
name = "quickstart-2d"
train_until = 2000
validation_interval = 200

[task]
kind = "distance"

[architecture]
kind = "unet"
dims = 2
downsample_factors = [[2, 2], [2, 2]]
input_shape = [132, 132]

[datasplit]
train = [{ zarr = "data/cells.zarr", raw = "raw", gt = "labels" }]
validate = [{ name = "val0", zarr = "data/cells.zarr", raw = "raw_val", gt = "labels_val" }]
"#;

fn path() -> &'static Path {
    Path::new("configs/test.toml")
}

fn parse(text: &str) -> Result<RunConfig, CoreError> {
    RunConfig::from_toml(text, path())
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.run.name.as_str(), "quickstart-2d");
    assert_eq!(c.run.seed, 42);
    assert_eq!(c.run.backend, Backend::Flex);
    assert_eq!(c.run.device, DeviceSpec::Default);
    assert_eq!(c.trainer.batch_size, 2);
    assert_eq!(c.stores.root, PathBuf::from("runs"));
    assert_eq!(c.stores.keep_last, 5);
    let ArchitectureConfig::Unet(u) = &c.architecture;
    assert_eq!((u.fmaps, u.fmap_inc_factor, u.kernel_size), (12, 2, 3));
    assert_eq!(u.padding, Padding::Valid);
    match &c.task {
        TaskConfig::Distance {
            scale_factor,
            thresholds,
        } => {
            assert_eq!(*scale_factor, 10.0);
            assert_eq!(thresholds.len(), 5);
        }
        other => panic!("wrong task {other:?}"),
    }
    assert_eq!(c.datasplit.validate[0].display_name(), "val0");
    assert_eq!(c.datasplit.train[0].display_name(), "cells_raw");
}

#[test]
fn unknown_key_names_key_and_file() {
    let text = MINIMAL.replace("dims = 2", "dims = 2\nfmapz = 3");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("configs/test.toml"), "{err}");
    assert!(err.contains("fmapz"), "{err}");
    let text = MINIMAL.replace("[run]", "[run]\nvalidaton_interval = 5");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("validaton_interval"), "{err}");
    let text = format!("{MINIMAL}\n[extra]\nx = 1\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("extra"), "{err}");
}

#[test]
fn malformed_toml_names_file_and_line() {
    let text = MINIMAL.replace("train_until = 2000", "train_until = ");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("configs/test.toml") && err.contains("line"),
        "{err}"
    );
}

#[test]
fn missing_key_and_bad_values_are_named() {
    let text = MINIMAL.replace("validation_interval = 200\n", "");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("validation_interval"), "{err}");
    let text = MINIMAL.replace("validation_interval = 200", "validation_interval = 0");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("run.validation_interval"), "{err}");
    let text = MINIMAL.replace("[[2, 2], [2, 2]]", "[[2, 2], [2]]");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("downsample_factors"), "{err}");
    let text = MINIMAL.replace("name = \"quickstart-2d\"", "name = \"../escape\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("invalid run name"), "{err}");
    let text = MINIMAL.replace("kind = \"distance\"", "kind = \"segmentation\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("segmentation"), "{err}");
    let text = MINIMAL.replace("[run]", "[run]\nbackend = \"metal\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("metal"), "{err}");
    let text = MINIMAL.replace("[run]", "[run]\ndevice = \"gpu:0\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("gpu:0") && err.contains("cuda:N"), "{err}");
    let text = MINIMAL.replace("name = \"val0\"", "name = \"a/b\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("datasplit.validate[0].name"), "{err}");
}

#[test]
fn environment_overrides_apply_and_unknown_ones_fail() {
    let c = RunConfig::from_toml_with_env(
        MINIMAL,
        path(),
        env(&[
            ("DACAPO__RUN__SEED", "7"),
            ("DACAPO__RUN__TRAIN_UNTIL", "10"),
            ("DACAPO__TRAINER__LEARNING_RATE", "0.001"),
            ("DACAPO__RUN__DEVICE", "cuda:1"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.run.device, DeviceSpec::Cuda(1));
    assert_eq!(c.run.seed, 7);
    assert_eq!(c.run.train_until, 10);
    assert_eq!(c.trainer.learning_rate, 0.001);
    let err = RunConfig::from_toml_with_env(MINIMAL, path(), env(&[("DACAPO__RUN__SEEDS", "7")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("DACAPO__RUN__SEEDS") && err.contains("seeds"),
        "{err}"
    );
}

#[test]
fn trajectory_hash_ignores_schedule_but_not_training() {
    let base = parse(MINIMAL).unwrap();
    let longer = parse(&MINIMAL.replace("train_until = 2000", "train_until = 9000")).unwrap();
    assert_eq!(base.trajectory_hash(), longer.trajectory_hash());
    let other_lr = parse(&format!("{MINIMAL}\n[trainer]\nlearning_rate = 0.5\n")).unwrap();
    assert_ne!(base.trajectory_hash(), other_lr.trajectory_hash());
    assert_eq!(base.trajectory_hash().len(), 32);
    let prefetched = parse(&format!("{MINIMAL}\n[trainer]\nprefetch = 7\n")).unwrap();
    assert_eq!(prefetched.trainer.prefetch, 7);
    assert_eq!(base.trajectory_hash(), prefetched.trajectory_hash());
    // A checkpoint may continue on another backend or device (tested in
    // dacapo-trainer's backends test): neither is part of the hash.
    let moved =
        parse(&MINIMAL.replace("[run]", "[run]\nbackend = \"tch\"\ndevice = \"cuda:1\"")).unwrap();
    assert_eq!(moved.run.device, DeviceSpec::Cuda(1));
    assert_eq!(base.trajectory_hash(), moved.trajectory_hash());
    let logged = parse(&format!(
        "{MINIMAL}\n[logging]\ntensorboard = false\ndir = \"tb\"\nstride = 10\n"
    ))
    .unwrap();
    assert_eq!(logged.logging.stride, 10);
    assert_eq!(base.trajectory_hash(), logged.trajectory_hash());
}

#[test]
fn logging_defaults_to_tensorboard_under_the_store_root() {
    let c = parse(MINIMAL).unwrap();
    assert!(c.logging.tensorboard);
    assert_eq!(c.logging.stride, 1);
    assert_eq!(
        c.logging.run_dir(Path::new("runs"), "r"),
        Path::new("runs").join("r")
    );
    let err = parse(&format!("{MINIMAL}\n[logging]\nstride = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("logging.stride"), "{err}");
}

#[test]
fn trajectory_hashes_of_existing_runs_are_unchanged() {
    // Hashes written into checkpoints before the post-processing keys existed: a run trained
    // then must still resume, so adding keys must not change them. (Field-order JSON, as every
    // binary hashes it; the quickstart checkpoints of main's binary carry the same hashes.)
    let cases = [
        ("kind = \"distance\"", "22cff90ce0eb571f6bc732b060ccc814"),
        ("kind = \"affinities\"", "0b508fcb27b3b774adaa8e43f42dc339"),
        (
            "kind = \"affinities\"\nneighborhood = [[1, 0], [0, 1], [3, 0], [0, 3]]\n\
             loss = \"mse\"\nbiases = [0.5, 0.7]",
            "9a4f729fe25a17d5332ca1444cd3619b",
        ),
        (
            "kind = \"binary\"\nthresholds = [0.5]",
            "239493ff09a4b78e5107bd2cd0fed2c2",
        ),
        (
            "kind = \"one_hot\"\nclasses = [\"bg\", \"fg\"]",
            "9190b4808af757c4b2558edaa357d475",
        ),
    ];
    let got: Vec<String> = cases
        .iter()
        .map(|(task, _)| {
            parse(&MINIMAL.replace("kind = \"distance\"", task))
                .unwrap()
                .trajectory_hash()
        })
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(_, hash)| *hash).collect();
    assert_eq!(got, expected);
}

#[test]
fn post_processing_keys_are_not_hashed() {
    let affinities = MINIMAL.replace("kind = \"distance\"", "kind = \"affinities\"");
    let base = parse(&affinities).unwrap();
    let changed = parse(&format!(
        "{}\n[validation]\nmin_sizes = [0, 7]\n",
        affinities.replace(
            "kind = \"affinities\"",
            "kind = \"affinities\"\npost_process = \"watershed\"\nthresholds = [0.3]",
        )
    ))
    .unwrap();
    let TaskConfig::Affinities {
        post_process,
        thresholds,
        ..
    } = &changed.task
    else {
        panic!("expected affinities")
    };
    assert_eq!(*post_process, AffinityPostProcess::Watershed);
    assert_eq!(thresholds, &[0.3]);
    assert_eq!(changed.validation.min_sizes, [0, 7]);
    assert_eq!(base.trajectory_hash(), changed.trajectory_hash());
    // The distance task's `thresholds` were always hashed and stay so.
    let other = parse(&MINIMAL.replace(
        "kind = \"distance\"",
        "kind = \"distance\"\nthresholds = [0.1]",
    ))
    .unwrap();
    assert_ne!(
        parse(MINIMAL).unwrap().trajectory_hash(),
        other.trajectory_hash()
    );
    let err = parse(&affinities.replace(
        "kind = \"affinities\"",
        "kind = \"affinities\"\npost_process = \"waterz\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("waterz") && err.contains("watershed"), "{err}");
}

#[test]
fn toml_round_trip() {
    let c = parse(MINIMAL).unwrap();
    let again = parse(&c.to_toml()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn load_reports_missing_file() {
    let err = RunConfig::load(Path::new("/nonexistent/run.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/run.toml"), "{err}");
}

#[test]
fn empty_or_non_finite_sweeps_are_rejected() {
    let text = MINIMAL.replace(
        "kind = \"distance\"",
        "kind = \"distance\"\nthresholds = []",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("task.thresholds"), "{err}");
    let text = MINIMAL.replace(
        "kind = \"distance\"",
        "kind = \"affinities\"\nbiases = [nan]",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("task.biases"), "{err}");
    let text = MINIMAL.replace(
        "kind = \"distance\"",
        "kind = \"affinities\"\nthresholds = []",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("task.thresholds"), "{err}");
    let err = parse(&format!("{MINIMAL}\n[validation]\nmin_sizes = []\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("validation.min_sizes"), "{err}");
    let err = parse(&format!("{MINIMAL}\n[validation]\nmin_sizes = [-1]\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_sizes"), "{err}");
}

#[test]
fn affinities_neighborhood_defaults_to_unit_offsets() {
    let text = MINIMAL.replace("kind = \"distance\"", "kind = \"affinities\"");
    let c = parse(&text).unwrap();
    assert_eq!(c.task.neighborhood(2), Some(vec![vec![1, 0], vec![0, 1]]));
    let text = MINIMAL.replace(
        "kind = \"distance\"",
        "kind = \"affinities\"\nneighborhood = [[3, 0], [0, -3]]",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.task.neighborhood(2), Some(vec![vec![3, 0], vec![0, -3]]));
    assert_eq!(parse(MINIMAL).unwrap().task.neighborhood(2), None);
}

#[test]
fn reserved_validation_dataset_names_are_rejected() {
    let text = MINIMAL.replace("name = \"val0\"", "name = \"validation\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("reserved"), "{err}");
}

#[test]
fn store_urls_with_passwords_are_rejected() {
    let ok = format!(
        "{MINIMAL}\n[stores]\nstats = \"postgres://dacapo@db.example/runs\"\nweights = \"s3://bucket/prefix\"\n"
    );
    let c = parse(&ok).unwrap();
    assert_eq!(c.stores.weights.as_deref(), Some("s3://bucket/prefix"));
    let bad = format!("{MINIMAL}\n[stores]\nstats = \"postgres://dacapo:hunter2@db/runs\"\n");
    let err = parse(&bad).unwrap_err().to_string();
    assert!(
        err.contains("stores.stats") && !err.contains("hunter2"),
        "{err}"
    );
}
