//! Progress with output that is not a terminal (a pipe here, a SLURM log in production):
//! plain lines, at most every `--log-interval` seconds, one per validation; the same as JSON
//! lines with `--log-format json`; in `train`, `validate` and `predict`.

use serde_json::Value;

use crate::util::{dacapo, ok, tiny};

/// The stderr lines of a command that must succeed.
fn stderr_lines(args: &[&str]) -> Vec<String> {
    let out = dacapo().args(args).output().unwrap();
    ok(&out);
    String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every line parsed as JSON.
fn json_events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn redirected_training_logs_progress_and_every_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "logged")
        .schedule(6, 2)
        .validate()
        .write(dir.path());
    let lines = stderr_lines(&["train", "--log-interval", "0", cfg.to_str().unwrap()]);
    assert_eq!(
        lines[0], "logged: training from iteration 0 to 6",
        "{lines:#?}"
    );
    let progress: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(": iteration "))
        .collect();
    assert_eq!(
        progress.len(),
        6,
        "a line per step with a zero interval: {lines:#?}"
    );
    for (i, line) in progress.iter().enumerate() {
        assert!(
            line.starts_with(&format!("logged: iteration {}/6 (", i + 1)),
            "{line}"
        );
        assert!(
            line.contains("  loss ") && line.contains(" it/s  ETA "),
            "{line}"
        );
    }
    let validations: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("logged: validated checkpoint "))
        .collect();
    assert_eq!(validations.len(), 3, "{lines:#?}");
    for (line, n) in validations.iter().zip([2, 4, 6]) {
        assert!(
            line.starts_with(&format!("logged: validated checkpoint {n}: val "))
                && line.contains("val f1 "),
            "{line}"
        );
        assert!(
            line.contains("val dice ") && line.contains("(threshold="),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("validate 2 val: block ")),
        "the validation's blocks are logged: {lines:#?}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("run `logged` trained to 6"),
        "{lines:#?}"
    );
    // No terminal control characters (bars) in a log.
    assert!(
        !lines
            .iter()
            .any(|l| l.contains('\u{1b}') || l.contains('\r'))
    );

    // The default interval (10 s) leaves the start, the validations and the last state.
    let cfg = tiny(dir.path(), "quiet")
        .schedule(4, 2)
        .validate()
        .write(dir.path());
    let lines = stderr_lines(&["train", cfg.to_str().unwrap()]);
    let progress = lines.iter().filter(|l| l.contains(": iteration ")).count();
    assert!(progress <= 2, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("quiet: iteration 4/4 (100%)")),
        "{lines:#?}"
    );
    let validations = lines
        .iter()
        .filter(|l| l.contains("validated checkpoint"))
        .count();
    assert_eq!(validations, 2, "{lines:#?}");
}

#[test]
fn json_lines_carry_training_validation_and_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "json")
        .schedule(4, 2)
        .validate()
        .write(dir.path());
    let lines = stderr_lines(&[
        "train",
        "--log-format",
        "json",
        "--log-interval",
        "0",
        cfg.to_str().unwrap(),
    ]);
    let events = json_events(&lines);
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == kind).collect() };
    assert_eq!(of("training")[0]["total"], 4, "{lines:#?}");
    let progress = of("progress");
    assert_eq!(progress.len(), 4, "{lines:#?}");
    assert_eq!(progress[3]["iteration"], 4);
    assert!(progress[3]["loss"].as_f64().unwrap().is_finite());
    let validations = of("validation");
    assert_eq!(validations.len(), 2, "{lines:#?}");
    assert_eq!(validations[1]["iteration"], 4);
    let best = validations[1]["best"].as_array().unwrap();
    assert!(
        best.iter()
            .any(|b| b["dataset"] == "val" && b["criterion"] == "dice"),
        "{best:?}"
    );
    let trained = of("trained");
    assert_eq!(trained.len(), 1, "{lines:#?}");
    assert_eq!(trained[0]["last_checkpoint"], 4);
    assert_eq!(trained[0]["run"], "json");
}

#[test]
fn validate_and_predict_log_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "again")
        .schedule(2, 2)
        .validate()
        .write(dir.path());
    ok(&dacapo().arg("train").arg(&cfg).output().unwrap());
    let root = dir.path().join("runs");
    let root = root.to_str().unwrap();
    let lines = stderr_lines(&[
        "validate",
        "--run",
        "again",
        "--root",
        root,
        "--log-interval",
        "0",
    ]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("again: validated checkpoint 2: val ") && l.contains("val f1 ")),
        "{lines:#?}"
    );
    let input = dir.path().join("data.zarr/raw_val");
    let output = dir.path().join("out.zarr");
    let lines = stderr_lines(&[
        "predict",
        "--run",
        "again",
        "--root",
        root,
        "--iteration",
        "2",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let events = json_events(&lines);
    let blocks: Vec<&Value> = events.iter().filter(|e| e["event"] == "blocks").collect();
    let last = blocks.last().unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(last["done"], last["total"]);
    assert!(
        events.iter().any(|e| e["event"] == "predicted"),
        "{lines:#?}"
    );
}
