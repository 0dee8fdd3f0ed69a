//! `cargo xtask deps`: checks that the workspace crates depend on each other only along
//! docs/DESIGN.md's dependency line, and that the store and data-model crates stay free of
//! burn (run by `cargo xtask ci`, and as a test of xtask).
//!
//! ```text
//! core ← store ← store-postgres, store-object    core ← data    ndimage, kernels
//!   ← models ← runtime ← trainer, validator ← cli    tensorboard ← trainer
//! ```

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cargo;

/// Each workspace library and the workspace crates it may depend on (normal and build
/// dependencies; tests and benches may use more).
pub const ALLOWED: &[(&str, &[&str])] = &[
    ("dacapo-core", &[]),
    ("dacapo-store", &["dacapo-core"]),
    ("dacapo-store-postgres", &["dacapo-core", "dacapo-store"]),
    ("dacapo-store-object", &["dacapo-core", "dacapo-store"]),
    ("dacapo-data", &["dacapo-core"]),
    ("dacapo-ndimage", &[]),
    ("dacapo-kernels", &[]),
    ("dacapo-tensorboard", &[]),
    (
        "dacapo-models",
        &["dacapo-core", "dacapo-ndimage", "dacapo-kernels"],
    ),
    (
        "dacapo-runtime",
        &[
            "dacapo-core",
            "dacapo-store",
            "dacapo-store-postgres",
            "dacapo-store-object",
            "dacapo-models",
            "dacapo-kernels",
        ],
    ),
    (
        "dacapo-trainer",
        &[
            "dacapo-core",
            "dacapo-store",
            "dacapo-data",
            "dacapo-models",
            "dacapo-runtime",
            "dacapo-tensorboard",
        ],
    ),
    (
        "dacapo-validator",
        &[
            "dacapo-core",
            "dacapo-store",
            "dacapo-data",
            "dacapo-ndimage",
            "dacapo-models",
            "dacapo-runtime",
        ],
    ),
    (
        "dacapo-cli",
        &[
            "dacapo-core",
            "dacapo-store",
            "dacapo-data",
            "dacapo-models",
            "dacapo-runtime",
            "dacapo-trainer",
            "dacapo-validator",
        ],
    ),
    ("xtask", &[]),
];

/// Crates whose whole dependency tree must not contain burn.
pub const NO_BURN: &[&str] = &[
    "dacapo-core",
    "dacapo-store",
    "dacapo-store-postgres",
    "dacapo-store-object",
    "dacapo-data",
    "dacapo-ndimage",
    "dacapo-tensorboard",
];

/// Runs `cargo xtask deps`.
pub fn run() -> Result<()> {
    let violations = check(&metadata()?)?;
    if !violations.is_empty() {
        bail!(
            "the crate dependencies break docs/DESIGN.md's dependency line:\n  {}",
            violations.join("\n  ")
        );
    }
    eprintln!("xtask: crate dependencies follow docs/DESIGN.md");
    Ok(())
}

/// `cargo metadata` of the workspace (with the resolved dependency graph).
pub fn metadata() -> Result<Value> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")
}

/// The rules `metadata` breaks, one line each.
pub fn check(metadata: &Value) -> Result<Vec<String>> {
    let graph = Graph::from_metadata(metadata)?;
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut out = Vec::new();
    for member in &graph.members {
        let Some(rules) = allowed.get(member.as_str()) else {
            out.push(format!(
                "{member} is not in xtask/src/deps.rs: add it with the crates it may use"
            ));
            continue;
        };
        for dep in graph.direct(member) {
            if graph.members.contains(dep) && !rules.contains(&dep.as_str()) {
                out.push(format!("{member} depends on {dep}"));
            }
        }
    }
    for krate in NO_BURN {
        if graph.reaches(krate, "burn") {
            out.push(format!(
                "{krate} depends on burn (through its dependencies)"
            ));
        }
    }
    if graph.reaches("dacapo-validator", "dacapo-trainer") {
        out.push("dacapo-validator depends on dacapo-trainer".into());
    }
    Ok(out)
}

/// The normal and build dependencies between packages, by name.
struct Graph {
    members: BTreeSet<String>,
    deps: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn from_metadata(metadata: &Value) -> Result<Self> {
        let name_of: BTreeMap<&str, &str> = metadata["packages"]
            .as_array()
            .context("cargo metadata has no packages")?
            .iter()
            .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
            .collect();
        let name = |id: &Value| {
            id.as_str()
                .and_then(|id| name_of.get(id))
                .map(|n| (*n).to_owned())
        };
        let members = metadata["workspace_members"]
            .as_array()
            .context("cargo metadata has no workspace members")?
            .iter()
            .filter_map(name)
            .collect();
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let nodes = metadata["resolve"]["nodes"]
            .as_array()
            .context("cargo metadata has no resolved graph")?;
        for node in nodes {
            let Some(from) = name(&node["id"]) else {
                continue;
            };
            let entry = deps.entry(from).or_default();
            for dep in node["deps"].as_array().into_iter().flatten() {
                let kinds = dep["dep_kinds"].as_array().into_iter().flatten();
                let runtime = kinds
                    .clone()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build");
                if let (true, Some(to)) = (runtime, name(&dep["pkg"])) {
                    entry.insert(to);
                }
            }
        }
        Ok(Self { members, deps })
    }

    fn direct(&self, krate: &str) -> impl Iterator<Item = &String> {
        self.deps.get(krate).into_iter().flatten()
    }

    /// Whether `target` is among the (transitive) dependencies of `from`.
    fn reaches(&self, from: &str, target: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(k) = todo.pop() {
            for d in self.direct(&k) {
                if d == target {
                    return true;
                }
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_workspace_follows_the_dependency_line() {
        let violations = check(&metadata().unwrap()).unwrap();
        assert!(violations.is_empty(), "{violations:#?}");
    }

    #[test]
    fn a_validator_on_the_trainer_is_caught() {
        let mut m = metadata().unwrap();
        let id_of = |m: &Value, name: &str| {
            m["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["id"]
                .clone()
        };
        let (validator, trainer) = (id_of(&m, "dacapo-validator"), id_of(&m, "dacapo-trainer"));
        let node = m["resolve"]["nodes"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|n| n["id"] == validator)
            .unwrap();
        node["deps"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "pkg": trainer,
                "dep_kinds": [{ "kind": null }],
            }));
        let violations = check(&m).unwrap();
        assert!(
            violations.contains(&"dacapo-validator depends on dacapo-trainer".to_owned()),
            "{violations:#?}"
        );
        // ...and through the trainer, burn reaches nothing it should not: store crates stay clean.
        assert!(
            !violations.iter().any(|v| v.contains("dacapo-store ")),
            "{violations:#?}"
        );
    }
}
