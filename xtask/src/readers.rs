//! The Python venvs of the readers the tests check our files with (OME-Zarr, TensorBoard),
//! each under `~/.cache/dacapo-rs/` and made by `cargo xtask setup --NAME`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// One reader: a pip package in its own venv, whose Python the tests find through a variable.
pub struct Reader {
    /// Its name in messages.
    name: &'static str,
    /// The `cargo xtask setup` flag that makes its venv.
    flag: &'static str,
    /// The venv's directory under `~/.cache/dacapo-rs/` (where the tests look by default).
    venv: &'static str,
    /// The variable that tells the tests which Python to use.
    env: &'static str,
    /// What pip installs.
    requirement: &'static str,
    /// The module the tests import.
    module: &'static str,
    /// The tests that skip without it.
    tests: &'static str,
}

/// ome-zarr-py (napari's OME-Zarr reader) with zarr-python 3, which reads OME-Zarr 0.4
/// (zarr v2) and 0.5 (zarr v3): `crates/data/tests/ome_zarr.rs`.
pub const OME_ZARR: Reader = Reader {
    name: "OME-Zarr",
    flag: "--ome-zarr",
    venv: "venv-ome-zarr",
    env: "DACAPO_OME_ZARR_PYTHON",
    requirement: "ome-zarr>=0.10",
    module: "ome_zarr.reader",
    tests: "the OME-Zarr reader test",
};

/// TensorBoard 2.x, whose `EventAccumulator` `dacapo_tensorboard::testing` calls.
pub const TENSORBOARD: Reader = Reader {
    name: "TensorBoard",
    flag: "--tensorboard",
    venv: "venv-tensorboard",
    env: "DACAPO_TENSORBOARD_PYTHON",
    requirement: "tensorboard>=2.14,<3",
    module: "tensorboard.backend.event_processing.event_accumulator",
    tests: "the TensorBoard read-back tests",
};

impl Reader {
    /// The venv's Python.
    fn python(&self) -> Result<PathBuf> {
        let home = std::env::var_os("HOME").context("HOME is not set")?;
        Ok(PathBuf::from(home)
            .join(".cache/dacapo-rs")
            .join(self.venv)
            .join("bin/python"))
    }

    fn imports(&self, python: &Path) -> bool {
        Command::new(python)
            .args(["-c", &format!("import {}", self.module)])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Makes the venv if it is missing or broken (`check`: only report); returns its Python.
    pub fn ensure(&self, check: bool) -> Result<PathBuf> {
        let python = self.python()?;
        if self.imports(&python) {
            eprintln!("xtask: {} reader: {}", self.name, python.display());
            return Ok(python);
        }
        if check {
            bail!(
                "no venv with {} (run `cargo xtask setup {}`)",
                self.requirement,
                self.flag
            );
        }
        let venv = python
            .parent()
            .and_then(Path::parent)
            .context("venv path")?;
        crate::status(Command::new("python3").arg("-m").arg("venv").arg(venv)).context(
            "python3 -m venv failed: install Python 3 with venv (Debian: apt-get install \
             python3-venv)",
        )?;
        crate::status(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet"])
                .arg("--disable-pip-version-check")
                .arg(self.requirement),
        )
        .with_context(|| format!("pip could not install {}", self.requirement))?;
        if !self.imports(&python) {
            bail!("{} still cannot import {}", python.display(), self.module);
        }
        Ok(python)
    }

    /// The tests' environment: the reader's Python when it is there or can be installed;
    /// when it cannot, the reason is printed and its tests skip, saying so.
    pub fn env(&self) -> Vec<(String, String)> {
        match self.ensure(false) {
            Ok(python) => vec![(self.env.to_owned(), python.display().to_string())],
            Err(e) => {
                eprintln!("xtask: SKIPPING {}: {e:#}", self.tests);
                Vec::new()
            }
        }
    }
}
