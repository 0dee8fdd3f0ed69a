//! The frozen config of a run: the config it was first trained with, kept next to it so a
//! run resumes (and is validated, predicted with, listed) with exactly that config.

use std::path::Path;

use dacapo_core::{RunConfig, RunName};
use dacapo_store::layout;

use crate::error::RuntimeError;

/// Writes the frozen config of a new run, or checks an existing run's against `config`: a
/// config whose training trajectory differs is refused unless `force` (then replaced, with a
/// warning); other changes (store settings, `train_until`) are written.
pub fn freeze(config: &RunConfig, root: &Path, force: bool) -> Result<(), RuntimeError> {
    let run = &config.run.name;
    let path = layout::frozen_config_path(root, run);
    if let Some(text) = layout::read_frozen_config(root, run)? {
        let frozen = RunConfig::from_toml(&text, &path)?;
        if frozen.trajectory_hash() != config.trajectory_hash() {
            if !force {
                return Err(RuntimeError::ConfigChanged {
                    run: run.clone(),
                    frozen: path,
                    differences: differences(&frozen, config),
                });
            }
            tracing::warn!(
                "run `{run}`: continuing with a changed config (--force-config): {}",
                differences(&frozen, config)
            );
        }
        if frozen == *config {
            return Ok(());
        }
    }
    layout::write_frozen_config(root, run, &config.to_toml())?;
    Ok(())
}

/// The frozen config of `run` under `root`, with `stores.root` set to `root` (it was
/// written under this root, whatever its `stores.root` says); an error naming where it was
/// looked for if the run has none.
pub fn load(root: &Path, run: &RunName) -> Result<RunConfig, RuntimeError> {
    let path = layout::frozen_config_path(root, run);
    let Some(text) = layout::read_frozen_config(root, run)? else {
        return Err(RuntimeError::UnknownRun {
            run: run.clone(),
            root: root.to_owned(),
            path,
        });
    };
    let mut config = RunConfig::from_toml_with_env(&text, &path, std::env::vars())?;
    config.stores.root = root.to_owned();
    Ok(config)
}

/// Dotted keys whose values differ between two configs.
fn differences(a: &RunConfig, b: &RunConfig) -> String {
    fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(x), toml::Value::Table(y)) => {
                let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match (x.get(k), y.get(k)) {
                        (Some(va), Some(vb)) => walk(&p, va, vb, out),
                        (va, vb) => out.push(format!(
                            "{p}: {} -> {}",
                            va.map_or("(unset)".into(), ToString::to_string),
                            vb.map_or("(unset)".into(), ToString::to_string)
                        )),
                    }
                }
            }
            _ if a != b => out.push(format!("{prefix}: {a} -> {b}")),
            _ => {}
        }
    }
    let (Ok(a), Ok(b)) = (toml::Value::try_from(a), toml::Value::try_from(b)) else {
        return "(cannot compare)".into();
    };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out.join("; ")
}
