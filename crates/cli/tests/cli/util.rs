//! What every command test uses: the `dacapo` binary, its output, the tiny run config, and
//! reads of what a run stored.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dacapo_core::RunName;
use dacapo_core::testing::TinyRun;
use dacapo_store::{FileStatsStore, LocalWeightsStore, StatsStore, WeightsStore};

/// The `dacapo` binary, with no store root or log filter inherited from the environment and
/// no stdin.
pub fn dacapo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dacapo"));
    cmd.env_remove("DACAPO_ROOT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `dacapo args...`.
pub fn run(args: &[&str]) -> Output {
    dacapo().args(args).output().unwrap()
}

/// Stdout of a command that must succeed.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Stderr of a command that must succeed.
pub fn ok_stderr(out: &Output) -> String {
    ok(out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stderr of a command that must fail.
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpectedly succeeded: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// `name` as a run name.
pub fn run_name(name: &str) -> RunName {
    RunName::new(name).unwrap()
}

/// The tiny run `name` of the command tests, under `dir` (see [`TinyRun`]).
pub fn tiny(dir: &Path, name: &str) -> TinyRun {
    TinyRun::new(name, dir)
}

/// `dacapo train CONFIG` to the end; its stderr.
pub fn train(config: &Path) -> String {
    ok_stderr(&dacapo().arg("train").arg(config).output().unwrap())
}

/// `dacapo train CONFIG` started in the background with its output discarded (to be killed).
pub fn spawn_train(config: &Path) -> std::process::Child {
    dacapo()
        .arg("train")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The newest committed checkpoint of `run` under the local store `root`.
pub fn latest(root: &Path, run: &str) -> Option<u64> {
    LocalWeightsStore::new(root)
        .latest_iteration(&run_name(run))
        .ok()
        .flatten()
}

/// How far `run` under the local store `root` has trained, by its stats.
pub fn trained_until(root: &Path, run: &str) -> u64 {
    FileStatsStore::new(root)
        .retrieve_training_stats(&run_name(run))
        .unwrap()
        .trained_until()
}

/// Polls `done` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A path inside the test fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/fixtures/torch")
        .join(name)
}

/// A run name no earlier test process used (databases and buckets outlive test processes).
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The URL of a test service (`DACAPO_TEST_POSTGRES_URL`, `DACAPO_TEST_S3_URL`, set by
/// `cargo xtask services up`), or `None` when it is not set: the test then skips, printing
/// why. A set variable is a promise that the service runs, so nothing here checks it: a
/// service that is down fails the tests that use it.
pub fn service_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) => {
            println!(
                "SKIPPED {test}: {var} is not set (run `cargo xtask services up` and export \
                 `cargo xtask services env`)"
            );
            None
        }
    }
}
