//! The postgres service of `cargo xtask services`.

use std::path::Path;

use anyhow::{Result, bail};

/// Starts postgres under `dir` (or finds it running); returns the variables its tests read.
pub fn up(_dir: &Path) -> Result<Vec<(String, String)>> {
    bail!("the postgres service is not implemented yet")
}

/// Stops postgres and removes its state under `dir`.
pub fn down(_dir: &Path) -> Result<()> {
    Ok(())
}
