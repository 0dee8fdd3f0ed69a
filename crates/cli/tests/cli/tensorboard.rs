//! `dacapo train`'s TensorBoard event files, read back by TensorBoard's own reader (the
//! `tensorboard` Python package, see `cargo xtask setup --tensorboard`): exactly the stored
//! training stats and validation scores, each step once, also after SIGKILL and resume; the
//! snapshot PNGs decode with the expected layout, are TensorBoard's images and are listed by
//! `dacapo runs show --snapshots`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dacapo_core::BestDim;
use dacapo_store::{FileStatsStore, LocalWeightsStore, StatsStore, WeightsStore};
use dacapo_tensorboard::testing::{self, ReadBack};

use crate::util::{dacapo, run_name, tiny};

const RUN: &str = "tb";
const TRAIN_UNTIL: u64 = 40;
const INTERVAL: u64 = 10;
/// Columns between snapshot panels (`dacapo_validator::snapshot::GAP`).
const GAP: usize = dacapo_validator::snapshot::GAP;

fn setup(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let root = dir.join(name);
    let data = dir.join("data.zarr");
    let cfg = dir.join(format!("{name}.toml"));
    let text = tiny(dir, RUN)
        .data(&data)
        .root(&root)
        .schedule(TRAIN_UNTIL, INTERVAL)
        .validate()
        .toml();
    std::fs::write(&cfg, text).unwrap();
    (root, cfg)
}

fn train(cfg: &Path) -> Command {
    let mut cmd = dacapo();
    cmd.args(["train", "--no-progress"]).arg(cfg);
    cmd
}

fn train_to_end(cfg: &Path) {
    let out = train(cfg).output().unwrap();
    assert!(
        out.status.success(),
        "dacapo train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn f32_bits(v: f64) -> u32 {
    (v as f32).to_bits()
}

/// What TensorBoard shows for the run equals what the stores hold: every training step once
/// with its stored loss, the speed from its stored time, the learning rate; every stored
/// validation score and the best parameter's; one snapshot per validation.
fn assert_matches_stores(back: &ReadBack, root: &Path) {
    let stats = FileStatsStore::new(root)
        .retrieve_training_stats(&run_name(RUN))
        .unwrap();
    assert_eq!(stats.trained_until(), TRAIN_UNTIL);
    let scalars = |tag: &str| -> Vec<(i64, u32)> {
        back.scalars
            .get(tag)
            .unwrap_or_else(|| panic!("no {tag} in {:?}", back.scalars.keys()))
            .iter()
            .map(|&(step, v)| (step, v.to_bits()))
            .collect()
    };
    let records = stats.iteration_stats();
    let expect = |f: &dyn Fn(&dacapo_core::TrainingIterationStats) -> f64| -> Vec<(i64, u32)> {
        records
            .iter()
            .map(|r| (r.iteration as i64, f32_bits(f(r))))
            .collect()
    };
    assert_eq!(scalars("train/loss"), expect(&|r| r.loss));
    assert_eq!(
        scalars("train/iterations_per_second"),
        expect(&|r| 1.0 / r.time)
    );
    assert_eq!(scalars("train/learning_rate"), expect(&|_| 1e-3));

    let scores = FileStatsStore::new(root)
        .retrieve_validation_iteration_scores(&run_name(RUN))
        .unwrap();
    let mut expected: BTreeMap<String, Vec<(i64, u32)>> = BTreeMap::new();
    for b in scores.get_best(BestDim::Parameter) {
        expected
            .entry(format!("validation/{}/{}", b.dataset, b.criterion))
            .or_default()
            .push((b.iteration as i64, f32_bits(b.value)));
    }
    for s in scores.scores() {
        for (dataset, per_param) in &s.scores {
            for (parameter, per_crit) in per_param {
                for (criterion, v) in per_crit {
                    expected
                        .entry(format!("validation/{dataset}/{criterion}/{parameter}"))
                        .or_default()
                        .push((s.iteration as i64, f32_bits(v.0)));
                }
            }
        }
    }
    for points in expected.values_mut() {
        points.sort_unstable();
    }
    let validated: Vec<i64> = scores.scores().iter().map(|s| s.iteration as i64).collect();
    assert_eq!(validated, [10, 20, 30, 40]);
    let read: BTreeMap<String, Vec<(i64, u32)>> = expected
        .keys()
        .map(|tag| (tag.clone(), scalars(tag)))
        .collect();
    assert_eq!(read, expected);
    let logged: Vec<&String> = back
        .scalars
        .keys()
        .filter(|t| t.starts_with("validation/") && !expected.contains_key(*t))
        .collect();
    assert!(logged.is_empty(), "unexpected validation tags: {logged:?}");
    // Every parameter set x criterion, and the best of each criterion.
    let meta = &scores.meta;
    assert_eq!(meta.criteria.len(), 13);
    assert_eq!(
        expected.len(),
        (meta.parameters.len() + 1) * meta.criteria.len()
    );

    let images = &back.images["snapshot/val"];
    let steps: Vec<i64> = images.iter().map(|i| i.step).collect();
    assert_eq!(steps, validated);
    for image in images {
        let file = dacapo_validator::snapshot::snapshot_path(
            root,
            &run_name(RUN),
            image.step as u64,
            "val",
        );
        assert_eq!(
            image.encoded,
            std::fs::read(&file).unwrap(),
            "{}",
            file.display()
        );
        assert_eq!((image.width, image.height), (4 * 64 + 3 * GAP as u32, 64));
    }
}

/// Decodes an RGB PNG: width, height, pixels.
fn decode_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

/// The snapshot of checkpoint `iteration`: raw (grey), ground truth (black exactly on
/// background), the prediction written next to it (grey over [-1, 1]) and a segmentation in
/// label colours, side by side with white gaps.
fn assert_snapshot_layout(dir: &Path, root: &Path, iteration: u64) {
    let path = dacapo_validator::snapshot::snapshot_path(root, &run_name(RUN), iteration, "val");
    let (w, h, pixels) = decode_png(&path);
    let panel = 64;
    assert_eq!((w, h), (4 * panel + 3 * GAP, panel));
    let px = |p: usize, x: usize, y: usize| {
        let at = (y * w + p * (panel + GAP) + x) * 3;
        [pixels[at], pixels[at + 1], pixels[at + 2]]
    };
    let data = dir.join("data.zarr");
    let gt = dacapo_data::ZarrArray::open(&data, "labels_val", Some(2))
        .unwrap()
        .read_labels(&[0, 0], &[64, 64])
        .unwrap();
    let prediction_zarr = root
        .join(RUN)
        .join("validation")
        .join(iteration.to_string())
        .join("val.zarr");
    let prediction = dacapo_data::ZarrArray::open(&prediction_zarr, "prediction", Some(2))
        .unwrap()
        .read_f32(&[0, 0], &[64, 64])
        .unwrap();
    let mut segmented = 0;
    for y in 0..panel {
        for x in 0..panel {
            let [r, g, b] = px(0, x, y);
            assert!(r == g && g == b, "raw is grey");
            let label = px(1, x, y);
            assert_eq!(label == [0, 0, 0], gt[[y, x]] == 0, "gt at ({x}, {y})");
            let v = prediction[[0, y, x]];
            let grey = (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8;
            assert_eq!(px(2, x, y), [grey; 3], "prediction at ({x}, {y})");
            let seg = px(3, x, y);
            assert!(seg == [0, 0, 0] || seg.iter().all(|&c| c >= 0x40));
            segmented += usize::from(seg != [0, 0, 0]);
        }
        for gap in 0..GAP {
            let at = (y * w + panel + gap) * 3;
            assert_eq!(pixels[at..at + 3], [255, 255, 255], "gap");
        }
    }
    assert!(segmented > 0, "the segmentation panel is empty");
}

fn reader() -> Option<PathBuf> {
    match testing::python() {
        Ok(python) => Some(python),
        Err(reason) => {
            eprintln!("SKIPPED the TensorBoard read-back: {reason}");
            None
        }
    }
}

#[test]
fn tensorboard_shows_the_stored_stats_scores_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg) = setup(dir.path(), "whole");
    train_to_end(&cfg);
    assert_snapshot_layout(dir.path(), &root, 40);

    let out = dacapo()
        .args(["runs", "show", RUN, "--snapshots", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "{listed}");
    for (row, n) in rows.iter().zip([10, 20, 30, 40]) {
        let file = dacapo_validator::snapshot::snapshot_path(&root, &run_name(RUN), n, "val");
        assert_eq!(
            row,
            &[n.to_string().as_str(), "val", &file.display().to_string()]
        );
    }

    if let Some(python) = reader() {
        let back = testing::read_back(&python, &root.join(RUN)).unwrap();
        assert_matches_stores(&back, &root);
    }
}

#[test]
fn a_killed_and_resumed_run_shows_each_step_once() {
    let Some(python) = reader() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (first_root, first_cfg) = setup(dir.path(), "uninterrupted");
    let t0 = Instant::now();
    train_to_end(&first_cfg);
    let full_run = t0.elapsed();
    let reference = testing::read_back(&python, &first_root.join(RUN)).unwrap();
    assert_matches_stores(&reference, &first_root);
    // What an exact resume reproduces (the speed depends on the machine).
    let reproducible = |back: &ReadBack| -> BTreeMap<String, Vec<(i64, u32)>> {
        back.scalars
            .iter()
            .filter(|(tag, _)| *tag != "train/iterations_per_second")
            .map(|(tag, points)| {
                let bits = points.iter().map(|&(s, v)| (s, v.to_bits())).collect();
                (tag.clone(), bits)
            })
            .collect()
    };

    let mut killed_mid_run = 0;
    let mut jitter = 0x2545_F491_4F6C_DD1D_u64;
    for trial in 0..3 {
        let (root, cfg) = setup(dir.path(), &format!("trial{trial}"));
        let mut child = train(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let weights = LocalWeightsStore::new(&root);
        let deadline = Instant::now() + Duration::from_secs(60);
        while weights
            .latest_iteration(&run_name(RUN))
            .ok()
            .flatten()
            .is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        jitter ^= jitter << 13;
        jitter ^= jitter >> 7;
        jitter ^= jitter << 17;
        let wait = jitter % (full_run.as_millis() as u64 / 2).max(1);
        std::thread::sleep(Duration::from_millis(wait));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let at_kill = weights.latest_iteration(&run_name(RUN)).unwrap().unwrap();
        killed_mid_run += usize::from(at_kill < TRAIN_UNTIL);

        train_to_end(&cfg);
        let files = dacapo_tensorboard::event_files(&root.join(RUN)).unwrap();
        assert_eq!(files.len(), 2, "one event file per process");
        let back = testing::read_back(&python, &root.join(RUN)).unwrap();
        assert_matches_stores(&back, &root);
        assert!(
            reproducible(&back) == reproducible(&reference),
            "trial {trial}: resumed from {at_kill}, TensorBoard differs from the uninterrupted run"
        );
    }
    assert!(killed_mid_run > 0, "every kill came after training ended");
}
