//! The Python venv with the `ome-zarr` package, whose reader the OME-Zarr tests open our
//! outputs with (`crates/data/tests/ome_zarr.rs`), under `~/.cache/dacapo-rs/venv-ome-zarr`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The variable that tells the tests which Python reads OME-Zarr.
const PYTHON_ENV: &str = "DACAPO_OME_ZARR_PYTHON";

/// What pip installs: ome-zarr-py (napari's OME-Zarr reader) with zarr-python 3, which reads
/// OME-Zarr 0.4 (zarr v2) and 0.5 (zarr v3).
const REQUIREMENT: &str = "ome-zarr>=0.10";

/// The venv's Python (where the tests look for it by default).
fn python() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/dacapo-rs/venv-ome-zarr/bin/python"))
}

fn imports_reader(python: &PathBuf) -> bool {
    Command::new(python)
        .args(["-c", "import ome_zarr.reader"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes the venv if it is missing or broken (`check`: only report); returns its Python.
pub fn ensure(check: bool) -> Result<PathBuf> {
    let python = python()?;
    if imports_reader(&python) {
        eprintln!("xtask: OME-Zarr reader: {}", python.display());
        return Ok(python);
    }
    if check {
        bail!("no venv with ome-zarr (run `cargo xtask setup --ome-zarr`)");
    }
    let venv = python
        .parent()
        .and_then(|bin| bin.parent())
        .context("venv path")?
        .to_owned();
    crate::status(Command::new("python3").arg("-m").arg("venv").arg(&venv)).context(
        "python3 -m venv failed: install Python 3 with venv (Debian: apt-get install python3-venv)",
    )?;
    crate::status(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(REQUIREMENT),
    )
    .context("pip could not install ome-zarr")?;
    if !imports_reader(&python) {
        bail!("{} still cannot import ome_zarr", python.display());
    }
    Ok(python)
}

/// The tests' environment: the reader's Python when it is there or can be installed; when it
/// cannot, the reason is printed and the reader test skips, saying so.
pub fn env() -> Vec<(String, String)> {
    match ensure(false) {
        Ok(python) => vec![(PYTHON_ENV.to_owned(), python.display().to_string())],
        Err(e) => {
            eprintln!("xtask: SKIPPING the OME-Zarr reader test: {e:#}");
            Vec::new()
        }
    }
}
