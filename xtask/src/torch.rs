//! libtorch for the `tch` backend: a Python venv with PyPI's `torch` (whose libtorch serves
//! CUDA GPUs and the CPU alike), kept outside the clone like the target directory, and the
//! environment cargo needs to build against it (`LIBTORCH_USE_PYTORCH=1`, the venv's python
//! first on `PATH`).
//!
//! Nothing is downloaded but PyPI packages, through the venv's own pip. The built binaries
//! find libtorch through an rpath (`build/libtorch_rpath.rs`), so running them needs nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::status;

/// The PyTorch release whose libtorch burn-tch 0.22 (tch 0.22) is built for.
pub const TORCH_VERSION: &str = "2.9.0";

/// Oldest Python with `torch==2.9.0` wheels on PyPI.
const MIN_PYTHON: (u32, u32) = (3, 10);

/// Where the venv lives: `DACAPO_TORCH_VENV`, else `torch-<version>` in dacapo-rs's cache
/// directory (`$XDG_CACHE_HOME/dacapo-rs` or `~/.cache/dacapo-rs`).
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DACAPO_TORCH_VENV") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache
        .join("dacapo-rs")
        .join(format!("torch-{TORCH_VERSION}"))
}

/// The venv's python.
pub fn python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Whether `venv` holds a working `torch` of [`TORCH_VERSION`] (its libtorch included).
pub fn venv_is_valid(venv: &Path) -> bool {
    let check = format!(
        "import pathlib, torch; v = torch.__version__.split('+')[0]; \
         lib = pathlib.Path(torch.__file__).parent / 'lib' / 'libtorch_cpu.so'; \
         raise SystemExit(0 if v == '{TORCH_VERSION}' and lib.exists() else 1)"
    );
    Command::new(python(venv))
        .args(["-c", &check])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The venv with `torch`, made (or remade, when broken) if needed; returns its directory.
pub fn ensure_venv() -> Result<PathBuf> {
    let venv = venv_dir();
    if venv_is_valid(&venv) {
        eprintln!("xtask: torch {TORCH_VERSION} venv: {}", venv.display());
        return Ok(venv);
    }
    if venv.exists() {
        eprintln!(
            "xtask: {} is not a working torch {TORCH_VERSION} venv; making it again",
            venv.display()
        );
        std::fs::remove_dir_all(&venv)
            .with_context(|| format!("cannot remove {}", venv.display()))?;
    }
    let started = Instant::now();
    let python3 = system_python()?;
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    status(Command::new(&python3).args(["-m", "venv"]).arg(&venv))?;
    eprintln!(
        "xtask: installing torch=={TORCH_VERSION} from PyPI into {} (about 3 GB to download, \
         7 GB on disk)",
        venv.display()
    );
    // No pip cache: the venv itself is the cache, and a second copy of the wheels would
    // double the disk use.
    status(Command::new(python(&venv)).args([
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--disable-pip-version-check",
        &format!("torch=={TORCH_VERSION}"),
    ]))?;
    if !venv_is_valid(&venv) {
        bail!(
            "torch {TORCH_VERSION} was installed into {} but does not import; remove the \
             directory and run `cargo xtask setup --tch` again",
            venv.display()
        );
    }
    eprintln!(
        "xtask: torch venv ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(venv)
}

/// Sets what cargo needs to build the `tch` feature against the venv's libtorch.
pub fn build_env(cmd: &mut Command, venv: &Path) -> Result<()> {
    let bin = venv.join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        .context("PATH cannot hold the venv's bin directory")?;
    cmd.env("PATH", path)
        .env("VIRTUAL_ENV", venv)
        .env("LIBTORCH_USE_PYTORCH", "1")
        // torch-sys would otherwise prefer a libtorch named here over the venv's.
        .env_remove("LIBTORCH");
    Ok(())
}

/// The system's `python3`, checked to be new enough for torch's wheels and to make venvs.
fn system_python() -> Result<PathBuf> {
    let python3 = PathBuf::from("python3");
    let out = Command::new(&python3)
        .args([
            "-c",
            "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .context("python3 not found: install Python 3.10 or newer (`cargo xtask setup --tch` installs it with apt)")?;
    if !out.status.success() {
        bail!(
            "python3 cannot make venvs ({}): install python3-venv",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let parsed = version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some(v) if v >= MIN_PYTHON => Ok(python3),
        _ => bail!(
            "python3 is {version}; torch=={TORCH_VERSION} needs Python {}.{} or newer",
            MIN_PYTHON.0,
            MIN_PYTHON.1
        ),
    }
}

/// Whether `python3` exists and can make venvs (else the `python3-venv` package is missing).
pub fn python_can_make_venvs() -> bool {
    Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success())
}
