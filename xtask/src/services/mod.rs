//! `cargo xtask services`: real servers on loopback for the scale-out store and cluster tests
//! (PostgreSQL, an S3-compatible object store, a single-node SLURM), started in a state
//! directory and described by environment variables that the tests read.
//!
//! Each service writes `<dir>/<name>.env` (`KEY=VALUE` lines) once it is up; `services env`
//! prints them, and `cargo xtask ci` passes them to `cargo test`. A service whose software
//! cannot be installed here ([`CannotInstall`]: no package manager, no root, no network) is
//! left out and its tests skip, listed in ci's summary; a service that is installed but does
//! not start is an error.

mod postgres;
mod s3;
mod slurm;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Why a service's software cannot be installed on this machine; any other error of `up`
/// means the service is installed but does not run.
#[derive(Debug)]
pub struct CannotInstall(pub String);

impl std::fmt::Display for CannotInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot be installed here: {}", self.0)
    }
}

impl std::error::Error for CannotInstall {}

/// What [`up`] did.
#[derive(Debug, Default)]
pub struct Started {
    /// Services that run.
    pub up: Vec<&'static str>,
    /// Services left out because they cannot be installed here, with why.
    pub skipped: Vec<(&'static str, String)>,
    /// Services that are installed but did not start, with why.
    pub failed: Vec<(&'static str, String)>,
}

/// The services `cargo xtask services` manages.
pub const ALL: &[&str] = &["postgres", "s3", "slurm"];

/// Arguments of `cargo xtask services`.
#[derive(clap::Args)]
pub struct ServicesArgs {
    #[command(subcommand)]
    command: ServicesCmd,
}

#[derive(clap::Subcommand)]
enum ServicesCmd {
    /// Start services (all when none is named); ones already up are left running.
    Up {
        /// postgres, s3, slurm.
        names: Vec<String>,
    },
    /// Stop services (all when none is named) and remove their state.
    Down {
        /// postgres, s3, slurm.
        names: Vec<String>,
    },
    /// Print the environment variables of the services that are up, as `KEY=VALUE` lines.
    Env,
}

/// The state directory: `$DACAPO_SERVICES_DIR`, default `/tmp/dacapo-services`.
pub fn dir() -> PathBuf {
    std::env::var_os("DACAPO_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/dacapo-services"))
}

/// Runs `cargo xtask services`.
pub fn run(args: &ServicesArgs) -> Result<()> {
    match &args.command {
        ServicesCmd::Up { names } => {
            let started = up(&selected(names)?);
            let problems: Vec<String> = started
                .skipped
                .iter()
                .chain(&started.failed)
                .map(|(name, why)| format!("{name} ({why})"))
                .collect();
            if !problems.is_empty() {
                anyhow::bail!("could not start: {}", problems.join("; "));
            }
            Ok(())
        }
        ServicesCmd::Down { names } => {
            for name in selected(names)? {
                let dir = dir();
                match name {
                    "postgres" => postgres::down(&dir),
                    "s3" => s3::down(&dir),
                    _ => slurm::down(&dir),
                }
                .with_context(|| format!("stopping {name}"))?;
                let _ = std::fs::remove_file(env_file(&dir, name));
            }
            Ok(())
        }
        ServicesCmd::Env => {
            for (k, v) in env() {
                println!("{k}={v}");
            }
            Ok(())
        }
    }
}

fn selected(names: &[String]) -> Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            ALL.iter()
                .copied()
                .find(|a| a == n)
                .with_context(|| format!("unknown service {n:?}; known: {}", ALL.join(", ")))
        })
        .collect()
}

/// Starts `names`, printing why for each one that cannot start.
pub fn up(names: &[&'static str]) -> Started {
    let dir = dir();
    let mut started = Started::default();
    for &name in names {
        let result = std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .and_then(|()| match name {
                "postgres" => postgres::up(&dir),
                "s3" => s3::up(&dir),
                _ => slurm::up(&dir),
            })
            .and_then(|vars| write_env(&dir, name, &vars));
        match result {
            Ok(()) => {
                eprintln!("xtask: service {name} is up");
                started.up.push(name);
            }
            Err(e) if e.downcast_ref::<CannotInstall>().is_some() => {
                eprintln!("xtask: service {name} {e:#} (its tests will skip)");
                started.skipped.push((name, format!("{e:#}")));
            }
            Err(e) => {
                eprintln!("xtask: service {name} is installed but did NOT start: {e:#}");
                started.failed.push((name, format!("{e:#}")));
            }
        }
    }
    started
}

fn env_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.env"))
}

fn write_env(dir: &Path, name: &str, vars: &[(String, String)]) -> Result<()> {
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let path = env_file(dir, name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The environment variables of every service that is up.
pub fn env() -> Vec<(String, String)> {
    let dir = dir();
    ALL.iter()
        .filter_map(|name| std::fs::read_to_string(env_file(&dir, name)).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}
