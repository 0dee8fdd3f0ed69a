//! The s3 service of `cargo xtask services`: moto's S3-compatible server (from PyPI, installed
//! into a venv under `<dir>/s3/venv`) on 127.0.0.1:59000 with the bucket `dacapo-test`.
//!
//! moto keeps objects in memory and accepts any credentials: a test server, never storage.
//! The venv is kept by `down` (it only stops the server and removes its pid and log), so the
//! next `up` starts in a second instead of reinstalling.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::CannotInstall;

/// Loopback address and port of the server.
const HOST: &str = "127.0.0.1";
const PORT: u16 = 59000;
/// The bucket the tests use.
const BUCKET: &str = "dacapo-test";
/// The pip requirement installed into the venv.
const REQUIREMENT: &str = "moto[server]>=5,<6";
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn state_dir(dir: &Path) -> PathBuf {
    dir.join("s3")
}

fn pid_file(dir: &Path) -> PathBuf {
    state_dir(dir).join("moto.pid")
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], PORT))
}

fn listening() -> bool {
    TcpStream::connect_timeout(&addr(), Duration::from_millis(500)).is_ok()
}

/// The pid in the pid file if that process is alive and is our moto server.
fn running_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("moto_server")
        .then_some(pid)
}

/// Starts s3 under `dir` (or finds it running); returns the variables its tests read.
pub fn up(dir: &Path) -> Result<Vec<(String, String)>> {
    let sdir = state_dir(dir);
    std::fs::create_dir_all(&sdir).with_context(|| format!("cannot create {}", sdir.display()))?;
    if running_pid(dir).is_none() {
        if listening() {
            bail!(
                "{HOST}:{PORT} is taken by a process that is not this service's moto server; \
                 stop it or run `cargo xtask services down s3`"
            );
        }
        let server = install(&sdir)?;
        start(&sdir, &server)?;
    }
    create_bucket()?;
    let endpoint = format!("http://{HOST}:{PORT}");
    Ok([
        ("DACAPO_TEST_S3_URL", format!("s3://{BUCKET}/tests")),
        ("AWS_ACCESS_KEY_ID", "dacapo-test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "dacapo-test-secret".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

/// Installs moto into `<sdir>/venv` unless it is there; returns the server executable.
fn install(sdir: &Path) -> Result<PathBuf> {
    let venv = sdir.join("venv");
    let server = venv.join("bin").join("moto_server");
    if server.exists() {
        return Ok(server);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    eprintln!("xtask: installing {REQUIREMENT} into {}", venv.display());
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv)).map_err(|e| {
        CannotInstall(format!(
            "cannot create a venv with {python} (install python3 and python3-venv): {e:#}"
        ))
    })?;
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        REQUIREMENT,
    ]))
    .map_err(|e| {
        // A half-made venv would look installed next time.
        let _ = std::fs::remove_dir_all(&venv);
        CannotInstall(format!(
            "cannot pip install {REQUIREMENT:?} (is PyPI reachable?): {e:#}"
        ))
    })?;
    if !server.exists() {
        bail!("{} is missing after installing moto", server.display());
    }
    Ok(server)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Starts `server` in the background (its own process group, so it outlives xtask and a
/// Ctrl-C of the terminal) and waits until it accepts connections.
fn start(sdir: &Path, server: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let log_path = sdir.join("moto.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let err_log = log.try_clone().context("cannot duplicate the log handle")?;
    let mut child = Command::new(server)
        .args(["-H", HOST, "-p", &PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", server.display()))?;
    let pid_path = sdir.join("moto.pid");
    std::fs::write(&pid_path, format!("{}\n", child.id()))
        .with_context(|| format!("cannot write {}", pid_path.display()))?;
    let started = Instant::now();
    while !listening() {
        if let Some(status) = child.try_wait().context("cannot wait for moto_server")? {
            let _ = std::fs::remove_file(&pid_path);
            bail!(
                "moto_server exited with {status} before accepting connections; see {}",
                log_path.display()
            );
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = std::fs::remove_file(&pid_path);
            bail!(
                "moto_server did not listen on {HOST}:{PORT} within {START_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Creates the test bucket (moto accepts unsigned requests; an existing bucket is fine).
fn create_bucket() -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr(), Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {HOST}:{PORT}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "PUT /{BUCKET} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .context("cannot send the create-bucket request")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .context("cannot read the create-bucket response")?;
    let status_line = response.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" && !response.contains("BucketAlreadyOwnedByYou") {
        bail!("creating bucket {BUCKET} failed: {status_line}");
    }
    Ok(())
}

/// Stops s3 and removes its state under `dir` (the venv is kept for the next `up`).
pub fn down(dir: &Path) -> Result<()> {
    if let Some(pid) = running_pid(dir) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let started = Instant::now();
        while running_pid(dir).is_some() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if running_pid(dir).is_some() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    let sdir = state_dir(dir);
    for name in ["moto.pid", "moto.log"] {
        let _ = std::fs::remove_file(sdir.join(name));
    }
    Ok(())
}
