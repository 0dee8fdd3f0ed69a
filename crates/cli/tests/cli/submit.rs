//! `dacapo submit`: the sbatch scripts, config errors, detached local training, and (with
//! `DACAPO_TEST_SLURM`, set by `cargo xtask services up slurm`) jobs on a real single-node SLURM,
//! including a requeued job that resumes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dacapo_store::RunLock;
use serde_json::Value;

use crate::util::{self, fails, latest, ok, run_name, tiny, trained_until, wait_for};

/// The tiny run `name` (a few seconds of training), its config written as `<dir>/<name>.toml`.
fn config(dir: &Path, name: &str, train_until: u64, interval: u64) -> PathBuf {
    tiny(dir, name)
        .schedule(train_until, interval)
        .with(|c| c.run.threads = Some(1))
        .write(dir)
}

/// Runs `dacapo` in `dir`.
fn dacapo(dir: &Path, args: &[&str]) -> Output {
    util::dacapo().args(args).current_dir(dir).output().unwrap()
}

#[test]
fn dry_run_prints_a_requeueable_script_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "dry", 20, 10);
    let out = ok(&dacapo(
        dir.path(),
        &[
            "submit",
            "dry.toml",
            "--dry-run",
            "--gpus",
            "2",
            "--time",
            "01:30:00",
            "--partition",
            "gpu",
            "--cpus",
            "4",
            "--mem",
            "8G",
        ],
    ));
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    let run_dir = cwd.join("runs").join("dry");
    let submit = run_dir.join("submit");
    let expected_header = [
        format!("# {}", submit.join("dry.sbatch").display()),
        "#!/bin/bash".to_owned(),
        "#SBATCH --job-name=dacapo-dry".to_owned(),
        format!("#SBATCH --output={}/slurm-%j.out", submit.display()),
        "#SBATCH --open-mode=append".to_owned(),
        "#SBATCH --requeue".to_owned(),
        format!("#SBATCH --chdir={}", cwd.display()),
        format!("#SBATCH --comment={}", run_dir.display()),
        "#SBATCH --gpus=2".to_owned(),
        "#SBATCH --time=01:30:00".to_owned(),
        "#SBATCH --partition=gpu".to_owned(),
        "#SBATCH --cpus-per-task=4".to_owned(),
        "#SBATCH --mem=8G".to_owned(),
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..expected_header.len()], expected_header, "{out}");
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_dacapo")).unwrap();
    let cfg = std::fs::canonicalize(cfg).unwrap();
    assert_eq!(
        lines.iter().rev().find(|l| !l.is_empty()).copied(),
        Some(format!("exec {} train {}", exe.display(), cfg.display()).as_str()),
        "{out}"
    );
    assert!(!dir.path().join("runs").exists(), "a dry run wrote files");

    // Without options only the fixed lines; a bad time is refused by the argument parser.
    let out = ok(&dacapo(dir.path(), &["submit", "dry.toml", "--dry-run"]));
    assert_eq!(out.matches("#SBATCH").count(), 6, "{out}");
    let err = fails(&dacapo(
        dir.path(),
        &["submit", "dry.toml", "--dry-run", "--time", "2h"],
    ));
    assert!(err.contains("HH:MM:SS"), "{err}");
}

#[test]
fn a_bad_config_is_named_and_nothing_is_submitted() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "good", 20, 10);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(dir.path().join("good.toml"))
            .unwrap()
            .replace("seed = ", "sed = "),
    )
    .unwrap();
    let err = fails(&dacapo(
        dir.path(),
        &["submit", "good.toml", "bad.toml", "--executor", "local"],
    ));
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("unknown field `sed`"), "{err}");
    assert!(
        !dir.path().join("runs").exists(),
        "the good run started although another config is bad"
    );

    let err = fails(&dacapo(dir.path(), &["submit", "missing.toml"]));
    assert!(err.contains("missing.toml"), "{err}");

    // Two configs of one run would race for it.
    std::fs::copy(dir.path().join("good.toml"), dir.path().join("same.toml")).unwrap();
    let err = fails(&dacapo(
        dir.path(),
        &["submit", "good.toml", "same.toml", "--dry-run"],
    ));
    assert!(err.contains("both name run `good`"), "{err}");
}

#[test]
fn without_sbatch_the_error_suggests_local_or_the_xtask_service() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "nos", 20, 10);
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let out = util::dacapo()
        .args(["submit", "nos.toml"])
        .current_dir(dir.path())
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(err.contains("sbatch not found"), "{err}");
    assert!(err.contains("--executor local"), "{err}");
    assert!(err.contains("cargo xtask services up slurm"), "{err}");
    assert!(!dir.path().join("runs").join("nos").join("submit").exists());
}

#[test]
fn local_executor_trains_detached_and_a_finished_run_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "loc", 20, 10);
    let root = dir.path().join("runs");
    let out = ok(&dacapo(
        dir.path(),
        &["submit", "loc.toml", "--executor", "local"],
    ));
    let pid = out
        .strip_prefix("loc -> pid ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<u32>().ok());
    assert!(pid.is_some_and(|p| p != std::process::id()), "{out}");
    let log = root.join("loc").join("submit").join("local.log");
    // The trainer prints this line after it released the run.
    wait_for(Duration::from_secs(120), "the local run to finish", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("run `loc` trained to 20"))
    });
    assert!(RunLock::holder(&root, &run_name("loc")).unwrap().is_none());
    assert_eq!(latest(&root, "loc"), Some(20));
    assert_eq!(trained_until(&root, "loc"), 20);

    let out = ok(&dacapo(
        dir.path(),
        &["submit", "loc.toml", "--executor", "local"],
    ));
    assert_eq!(out, "loc: skipped, finished (checkpoint 20 of 20)\n");
}

#[test]
fn runs_ls_and_submit_read_job_states_from_squeue() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "fake", 20, 10);
    let run_dir = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("runs")
        .join("fake");
    std::fs::create_dir_all(run_dir.join("submit")).unwrap();
    // A stand-in squeue: a queued job of this run, a running one of another root's `fake`,
    // and a job that is not dacapo's.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let squeue = bin.join("squeue");
    std::fs::write(
        &squeue,
        format!(
            "#!/bin/sh\necho 'dacapo-fake|RUNNING|76|/elsewhere/runs/fake'\n\
             echo 'dacapo-fake|PENDING|77|{}'\necho 'other|RUNNING|78|(null)'\n",
            run_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&squeue, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        util::dacapo()
            .args(args)
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .unwrap()
    };

    let table = ok(&run(&["runs", "ls", "--root", "runs"]));
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with("fake "), "{table}");
    assert!(row.ends_with("  queued (slurm 77)"), "{table}");
    let json: Value =
        serde_json::from_str(&ok(&run(&["runs", "ls", "--json", "--root", "runs"]))).unwrap();
    assert_eq!(json[0]["status"], "queued");
    assert_eq!(
        json[0]["slurm"],
        serde_json::json!({"job_id": "77", "state": "PENDING"})
    );
    assert_eq!(
        ok(&run(&["submit", "fake.toml", "--executor", "local"])),
        "fake: skipped, already queued (slurm 77)\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Against a real SLURM.

fn slurm_available(test: &str) -> bool {
    if std::env::var_os("DACAPO_TEST_SLURM").is_some() {
        return true;
    }
    println!(
        "SKIPPED: {test}: DACAPO_TEST_SLURM is not set (run `cargo xtask services up slurm` and \
         pass the variables of `cargo xtask services env`)"
    );
    false
}

/// The job id in `run -> slurm job ID (log ...)`.
fn job_id(out: &str, run: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{run} -> slurm job ")))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id of {run} in {out:?}"))
        .to_owned()
}

/// Cancels the SLURM jobs of a test that fails, so they do not run on in a removed directory.
struct CancelOnDrop(Vec<String>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.0.is_empty() {
            let _ = Command::new("scancel").args(&self.0).status();
        }
    }
}

/// `runs ls --json`, by run name.
fn ls(dir: &Path) -> Vec<Value> {
    let out = ok(&dacapo(dir, &["runs", "ls", "--json", "--root", "runs"]));
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn slurm_runs_two_submitted_runs_to_completion() {
    if !slurm_available("slurm_runs_two_submitted_runs_to_completion") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runs");
    config(dir.path(), "sa", 20, 10);
    config(dir.path(), "sb", 30, 10);
    let out = ok(&dacapo(dir.path(), &["submit", "sa.toml", "sb.toml"]));
    let ids = [job_id(&out, "sa"), job_id(&out, "sb")];
    let _cancel = CancelOnDrop(ids.to_vec());
    assert_ne!(ids[0], ids[1]);

    let mut seen_job_state = false;
    wait_for(
        Duration::from_secs(180),
        "both SLURM jobs to finish",
        || {
            let runs = ls(dir.path());
            for r in &runs {
                if let Some(job) = r["slurm"].as_object() {
                    let i = ids.iter().position(|id| job["job_id"] == id.as_str());
                    assert!(i.is_some(), "unknown job {job:?} for {r}");
                    assert!(matches!(r["status"].as_str(), Some("queued" | "running")));
                    seen_job_state = true;
                }
            }
            runs.len() == 2
                && runs
                    .iter()
                    .all(|r| r["status"] == "finished" && r["slurm"].is_null())
        },
    );
    assert_eq!(trained_until(&root, "sa"), 20);
    assert_eq!(trained_until(&root, "sb"), 30);
    assert_eq!(latest(&root, "sb"), Some(30));
    // The jobs take seconds, polled every 200 ms: one of them was seen in the queue.
    assert!(seen_job_state, "runs ls never showed a SLURM job state");
    let log = std::fs::read_to_string(
        root.join("sa")
            .join("submit")
            .join(format!("slurm-{}.out", ids[0])),
    )
    .unwrap();
    assert!(log.contains("run `sa` trained to 20"), "{log}");

    let out = ok(&dacapo(dir.path(), &["submit", "sa.toml", "sb.toml"]));
    assert_eq!(
        out,
        "sa: skipped, finished (checkpoint 20 of 20)\nsb: skipped, finished (checkpoint 30 of 30)\n"
    );
}

#[test]
fn slurm_requeued_job_resumes_and_finishes() {
    if !slurm_available("slurm_requeued_job_resumes_and_finishes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runs");
    let until = 400;
    config(dir.path(), "rq", until, 20);
    let out = ok(&dacapo(dir.path(), &["submit", "rq.toml"]));
    let id = job_id(&out, "rq");
    let _cancel = CancelOnDrop(vec![id.clone()]);
    // A second submit while the job is queued or running is skipped.
    let again = ok(&dacapo(dir.path(), &["submit", "rq.toml"]));
    assert!(
        again.starts_with("rq: skipped, already queued (slurm ")
            || again.starts_with("rq: skipped, already running (slurm "),
        "{again}"
    );

    wait_for(Duration::from_secs(120), "the first checkpoint", || {
        latest(&root, "rq").is_some()
    });
    let before = latest(&root, "rq").unwrap();
    assert!(
        before < until,
        "the run finished before it could be requeued"
    );
    let status = Command::new("scontrol")
        .args(["requeue", &id])
        .status()
        .unwrap();
    assert!(status.success(), "scontrol requeue {id} failed");

    let log_path = root
        .join("rq")
        .join("submit")
        .join(format!("slurm-{id}.out"));
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Done when the second attempt has ended, not merely when the checkpoints reach the end:
    // the first attempt may finish before the requeue takes effect.
    wait_for(
        Duration::from_secs(180),
        "the requeued job to finish",
        || {
            read_log()
                .split_once("(restart 1)")
                .is_some_and(|(_, second)| second.contains(&format!("run `rq` trained to {until}")))
        },
    );
    wait_for(
        Duration::from_secs(60),
        "the job to leave the queue",
        || {
            let runs = ls(dir.path());
            runs.len() == 1 && runs[0]["status"] == "finished" && runs[0]["slurm"].is_null()
        },
    );
    assert_eq!(latest(&root, "rq"), Some(until));
    assert_eq!(trained_until(&root, "rq"), until);
    let log = read_log();
    // Both attempts append to one log; the second resumed from a checkpoint.
    assert!(log.contains("(restart 0)"), "{log}");
    assert!(log.contains("(restart 1)"), "{log}");
    assert!(
        log.contains(&format!("run `rq` trained to {until} (resumed from ")),
        "{log}"
    );
    assert!(!log.contains("(resumed from 0,"), "{log}");
}
