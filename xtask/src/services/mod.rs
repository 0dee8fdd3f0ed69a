//! `cargo xtask services`: real servers on loopback for the scale-out store and cluster tests
//! (PostgreSQL, an S3-compatible object store, a single-node SLURM), started in a state
//! directory and described by environment variables that the tests read.
//!
//! Each service writes `<dir>/<name>.env` (`KEY=VALUE` lines) once it is up; `services env`
//! prints them, and `cargo xtask ci` passes them to `cargo test`. A service that cannot be
//! started here is reported and left out: its tests skip with a printed reason.

mod postgres;
mod s3;
mod slurm;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
            let failed = up(&selected(names)?);
            if !failed.is_empty() {
                anyhow::bail!("could not start: {}", failed.join(", "));
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

/// Starts `names`, printing why for each one that cannot start; returns those that failed.
pub fn up(names: &[&'static str]) -> Vec<&'static str> {
    let dir = dir();
    let mut failed = Vec::new();
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
            Ok(()) => eprintln!("xtask: service {name} is up"),
            Err(e) => {
                eprintln!("xtask: service {name} NOT started (its tests will skip): {e:#}");
                failed.push(name);
            }
        }
    }
    failed
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
