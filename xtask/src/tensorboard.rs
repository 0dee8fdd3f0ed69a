//! The Python venv with the `tensorboard` package whose event-file reader the read-back
//! tests use (`dacapo_tensorboard::testing`), under `~/.cache/dacapo-rs/venv-tensorboard`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The variable that tells the tests which Python reads event files back.
const PYTHON_ENV: &str = "DACAPO_TENSORBOARD_PYTHON";

/// What pip installs: TensorBoard 2.x, whose `EventAccumulator` the tests call.
const REQUIREMENT: &str = "tensorboard>=2.14,<3";

/// The venv's Python (where `dacapo_tensorboard::testing` looks for it by default).
fn python() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/dacapo-rs/venv-tensorboard/bin/python"))
}

fn imports_tensorboard(python: &PathBuf) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import tensorboard.backend.event_processing.event_accumulator",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes the venv if it is missing or broken (`check`: only report); returns its Python.
pub fn ensure(check: bool) -> Result<PathBuf> {
    let python = python()?;
    if imports_tensorboard(&python) {
        eprintln!("xtask: tensorboard reader: {}", python.display());
        return Ok(python);
    }
    if check {
        bail!("no venv with tensorboard (run `cargo xtask setup --tensorboard`)");
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
    .context("pip could not install tensorboard")?;
    if !imports_tensorboard(&python) {
        bail!("{} still cannot import tensorboard", python.display());
    }
    Ok(python)
}

/// The tests' environment: the reader's Python when it is there or can be installed; when it
/// cannot, the reason is printed and the read-back tests skip, saying so.
pub fn env() -> Vec<(String, String)> {
    match ensure(false) {
        Ok(python) => vec![(PYTHON_ENV.to_owned(), python.display().to_string())],
        Err(e) => {
            eprintln!("xtask: SKIPPING the TensorBoard read-back tests: {e:#}");
            Vec::new()
        }
    }
}
