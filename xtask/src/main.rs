//! Project automation for dacapo-rs: `cargo xtask <command>`.
//!
//! Every command here is a thin wrapper over cargo and the project's own binaries, so what
//! CI runs, what the README tells a new user to run and what a developer runs are the same.

mod bench;
mod deps;
mod readers;
mod services;
mod sweep;
mod torch;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// dacapo-rs project automation.
#[derive(Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the README's commands need on Debian/Ubuntu and check the toolchain.
    Setup {
        /// Also install Mesa's Vulkan drivers so the wgpu backend runs without a GPU.
        #[arg(long)]
        wgpu: bool,
        /// Also make a venv with PyPI's torch (libtorch, cached outside the clone) and build
        /// `dacapo` with the tch backend against it.
        #[arg(long)]
        tch: bool,
        /// Also make the Python venv with `ome-zarr` that the OME-Zarr reader test uses.
        #[arg(long)]
        ome_zarr: bool,
        /// Also make the Python venv with `tensorboard` that the event-file read-back tests use.
        #[arg(long)]
        tensorboard: bool,
        /// Only report what is missing; install nothing.
        #[arg(long)]
        check: bool,
    },
    /// Exactly what CI runs: format check, clippy with warnings as errors, the dependency
    /// check, all tests.
    Ci,
    /// Check that crates depend on each other only along docs/DESIGN.md's dependency line.
    Deps,
    /// Run the test suite (the README's test command runs this through `ci`).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Generate the synthetic data if missing and train configs/quickstart.toml.
    Quickstart {
        /// Backend to build in and train on (`tch` first makes its torch venv).
        #[arg(long, value_enum, default_value_t = QuickBackend::Flex)]
        backend: QuickBackend,
        /// Extra arguments passed to `dacapo train`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run benchmarks, print JSON lines and a markdown table.
    Bench(bench::BenchArgs),
    /// Train many runs: configs, or one config over a grid of `--set key=v1,v2` overrides.
    Sweep(sweep::SweepArgs),
    /// Start, stop or describe the servers of the scale-out tests (PostgreSQL, S3, SLURM).
    Services(services::ServicesArgs),
    /// Long kill-and-verify runs of the stores (and the trainer with --train).
    Crash {
        /// Number of SIGKILL trials.
        #[arg(long, default_value_t = 1000)]
        trials: u32,
        /// Kill the trainer instead of the store writer.
        #[arg(long)]
        train: bool,
    },
}

/// A compute backend of `dacapo` (each a cargo feature but flex).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum QuickBackend {
    Flex,
    Wgpu,
    Cuda,
    Tch,
}

impl QuickBackend {
    /// The backend's name, as `run.backend` and its cargo feature spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            QuickBackend::Flex => "flex",
            QuickBackend::Wgpu => "wgpu",
            QuickBackend::Cuda => "cuda",
            QuickBackend::Tch => "tch",
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup {
            wgpu,
            tch,
            ome_zarr,
            tensorboard,
            check,
        } => {
            setup(wgpu, tch, check)?;
            if ome_zarr {
                readers::OME_ZARR.ensure(check)?;
            }
            if tensorboard {
                readers::TENSORBOARD.ensure(check)?;
            }
            Ok(())
        }
        Cmd::Ci => ci(),
        Cmd::Deps => deps::run(),
        Cmd::Test { args } => test(&args),
        Cmd::Quickstart { backend, args } => quickstart(backend, &args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Sweep(args) => sweep::run(&args),
        Cmd::Services(args) => services::run(&args),
        Cmd::Crash { trials, train } => crash(trials, train),
    }
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A `cargo` command run from the workspace root.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs a command, failing with its command line when it fails.
pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    eprintln!("xtask: running {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed with {status}");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn setup(wgpu: bool, tch: bool, check: bool) -> Result<()> {
    install_packages(wgpu, tch, check)?;
    if tch {
        if check {
            let venv = torch::venv_dir();
            if !torch::venv_is_valid(&venv) {
                bail!(
                    "no torch {} venv at {} (run `cargo xtask setup --tch`)",
                    torch::TORCH_VERSION,
                    venv.display()
                );
            }
        } else {
            build_tch()?;
        }
    }
    Ok(())
}

/// Makes the torch venv and builds `dacapo` (release) with the tch backend against it.
fn build_tch() -> Result<()> {
    let venv = torch::ensure_venv()?;
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "dacapo-cli",
        "--features",
        "tch",
    ]);
    torch::build_env(&mut cmd, &venv)?;
    status(&mut cmd)?;
    eprintln!(
        "xtask: built `dacapo` with the tch backend (target/release/dacapo under cargo's \
         target directory; it finds libtorch in {} by itself). To build it yourself: \
         LIBTORCH_USE_PYTORCH=1 PATH={}:$PATH cargo build --release -p dacapo-cli --features tch",
        venv.display(),
        venv.join("bin").display()
    );
    Ok(())
}

/// Checks the toolchain and installs the system packages the chosen backends need.
fn install_packages(wgpu: bool, tch: bool, check: bool) -> Result<()> {
    // rustc must be new enough for burn 0.22 (Rust 1.95).
    let version = Command::new("rustc")
        .arg("--version")
        .output()
        .context("rustc not found: install Rust with rustup (https://rustup.rs)")?;
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    eprintln!("xtask: {}", version.trim());
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if minor < 95 {
        bail!(
            "{} is too old: dacapo-rs needs Rust 1.95 or newer (`rustup update`)",
            version.trim()
        );
    }
    for component in ["rustfmt", "clippy"] {
        let present = Command::new("cargo")
            .args([
                if component == "rustfmt" {
                    "fmt"
                } else {
                    "clippy"
                },
                "--version",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            if check {
                eprintln!("xtask: missing rust component {component}");
            } else {
                status(Command::new("rustup").args(["component", "add", component]))?;
            }
        }
    }
    // A C compiler builds the zarr codecs (blosc, zstd).
    let mut packages: Vec<&str> = Vec::new();
    if !have("cc") {
        packages.push("build-essential");
    }
    if !have("pkg-config") {
        packages.push("pkg-config");
    }
    if wgpu && !dpkg_installed("mesa-vulkan-drivers") {
        packages.extend(["mesa-vulkan-drivers", "libvulkan1"]);
    }
    if tch && !torch::python_can_make_venvs() {
        packages.extend(["python3", "python3-venv"]);
    }
    if packages.is_empty() {
        eprintln!("xtask: setup: nothing to install");
        return Ok(());
    }
    if check {
        bail!(
            "missing packages: {} (run `cargo xtask setup`)",
            packages.join(" ")
        );
    }
    if !have("apt-get") {
        bail!(
            "missing packages {} and no apt-get: install them with your system's package manager",
            packages.join(" ")
        );
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut cmd = Command::new(all[0]);
        cmd.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        status(&mut cmd)
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&packages);
    apt(&install)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ci() -> Result<()> {
    status(cargo().args(["fmt", "--all", "--", "--check"]))?;
    status(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    deps::run()?;
    // Servers for the scale-out tests: one that cannot be installed here makes its tests
    // skip (listed at the end); one that is installed but does not start fails ci.
    let started = services::up(services::ALL);
    if !started.failed.is_empty() {
        let failed: Vec<String> = started
            .failed
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect();
        bail!(
            "services are installed but do not run, so their tests cannot pass: {}",
            failed.join("; ")
        );
    }
    // The Python readers the tests check our files with (OME-Zarr, TensorBoard).
    let mut python = readers::OME_ZARR.env();
    python.extend(readers::TENSORBOARD.env());
    test_with(&[], &python)?;
    let wgpu = wgpu_test()?;
    let tch = tch_test()?;
    eprintln!("xtask: ci passed");
    for (name, why) in &started.skipped {
        eprintln!("xtask: SKIPPED the {name} tests: the service {why}");
    }
    if let Some(why) = wgpu {
        eprintln!("xtask: SKIPPED the wgpu backend test: {why}");
    }
    if let Some(why) = tch {
        eprintln!("xtask: SKIPPED the tch backend tests: {why}");
    }
    Ok(())
}

/// The wgpu backend test, when a Vulkan driver (a GPU's, or Mesa's lavapipe) is installed;
/// else why it was skipped.
fn wgpu_test() -> Result<Option<&'static str>> {
    if !vulkan_driver_installed() {
        return Ok(Some(
            "no Vulkan driver found (`cargo xtask setup --wgpu` installs Mesa's lavapipe)",
        ));
    }
    status(cargo().args([
        "test",
        "--locked",
        "-p",
        "dacapo-trainer",
        "--features",
        "wgpu",
        "--test",
        "backends",
        "--",
        "--nocapture",
    ]))?;
    Ok(None)
}

/// The backend conformance tests (and `dacapo` end to end) on libtorch's CPU, when
/// `cargo xtask setup --tch` has made the torch venv (CI does not make it: a 3 GB download);
/// else why they were skipped.
fn tch_test() -> Result<Option<String>> {
    let venv = torch::venv_dir();
    if !torch::venv_is_valid(&venv) {
        return Ok(Some(format!(
            "no torch {} venv at {} (`cargo xtask setup --tch` makes it)",
            torch::TORCH_VERSION,
            venv.display()
        )));
    }
    // Both with the same packages and features, so the second reuses the first's build.
    for (test, filter) in [("backends", ""), ("cli", "devices::")] {
        let mut cmd = cargo();
        cmd.args([
            "test",
            "--locked",
            "-p",
            "dacapo-trainer",
            "-p",
            "dacapo-cli",
            "--features",
            "dacapo-trainer/tch,dacapo-cli/tch",
            "--test",
            test,
            "--",
            "--nocapture",
            filter,
        ]);
        torch::build_env(&mut cmd, &venv)?;
        status(&mut cmd)?;
    }
    Ok(None)
}

fn vulkan_driver_installed() -> bool {
    if ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return true;
    }
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "json"))
}

fn test(args: &[String]) -> Result<()> {
    test_with(args, &[])
}

/// `cargo test` of the workspace with the services' and `extra` environment variables.
fn test_with(args: &[String], extra: &[(String, String)]) -> Result<()> {
    status(
        cargo()
            .args(["test", "--workspace", "--locked"])
            .args(args)
            .envs(services::env())
            .envs(extra.iter().cloned()),
    )
}

fn quickstart(backend: QuickBackend, args: &[String]) -> Result<()> {
    setup(
        backend == QuickBackend::Wgpu,
        backend == QuickBackend::Tch,
        false,
    )?;
    let mut cmd = cargo();
    cmd.args(["run", "--release", "--locked", "-p", "dacapo-cli"]);
    if backend != QuickBackend::Flex {
        cmd.args(["--features", backend.name()]);
    }
    if backend == QuickBackend::Tch {
        torch::build_env(&mut cmd, &torch::venv_dir())?;
    }
    cmd.args([
        "--",
        "train",
        "configs/quickstart.toml",
        "--backend",
        backend.name(),
    ])
    .args(args);
    status(&mut cmd)
}

fn crash(trials: u32, train: bool) -> Result<()> {
    let (package, test, filter) = if train {
        ("dacapo-cli", "cli", "kill_resume::")
    } else {
        ("dacapo-store", "crash", "")
    };
    status(
        cargo()
            .args([
                "test",
                "--release",
                "--locked",
                "-p",
                package,
                "--test",
                test,
            ])
            .args(["--", "--nocapture", filter])
            .env("DACAPO_CRASH_TRIALS", trials.to_string()),
    )
}
