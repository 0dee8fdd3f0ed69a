//! `cargo xtask sweep`: train many runs (configs × a grid of overrides), each resumable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::{cargo, status};

/// Arguments of `cargo xtask sweep`.
#[derive(Args)]
pub struct SweepArgs {
    /// Run configs to train.
    #[arg(required = true)]
    configs: Vec<PathBuf>,
    /// Runs trained at the same time.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Override grid: `section.key=v1,v2,...` (repeatable; the product of all is trained).
    #[arg(long = "set", value_name = "KEY=VALUES")]
    sets: Vec<String>,
    /// Print the runs that would be trained and exit.
    #[arg(long)]
    dry_run: bool,
}

/// One run of the sweep: a config, its overrides and the derived run name.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    config: PathBuf,
    name: String,
    overrides: Vec<(String, String)>,
}

/// Parses `section.key=v1,v2` into the key and its values.
fn parse_set(set: &str) -> Result<(String, Vec<String>)> {
    let (key, values) = set
        .split_once('=')
        .with_context(|| format!("--set {set:?}: expected section.key=value[,value...]"))?;
    if !key.contains('.') || key.split('.').any(str::is_empty) {
        bail!("--set {set:?}: the key must be dotted like trainer.learning_rate");
    }
    // Values holding commas inside brackets (lists) stay whole: `input_shape=[64,64]`.
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in values.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    if out.iter().any(|v| v.trim().is_empty()) {
        bail!("--set {set:?}: empty value");
    }
    Ok((
        key.to_owned(),
        out.into_iter().map(|v| v.trim().to_owned()).collect(),
    ))
}

/// Characters allowed in run names; everything else in a value becomes `_`.
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The cartesian product of the grid applied to each config.
fn jobs(configs: &[PathBuf], sets: &[String], base_names: &[String]) -> Result<Vec<Job>> {
    let grid: Vec<(String, Vec<String>)> =
        sets.iter().map(|s| parse_set(s)).collect::<Result<_>>()?;
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (key, values) in &grid {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for (config, base) in configs.iter().zip(base_names) {
        for combo in &combos {
            let suffix: String = combo
                .iter()
                .map(|(k, v)| {
                    let short = k.rsplit('.').next().unwrap_or(k);
                    format!("-{}{}", name_part(short), name_part(v))
                })
                .collect();
            out.push(Job {
                config: config.clone(),
                name: format!("{base}{suffix}"),
                overrides: combo.clone(),
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for j in &out {
        if j.name.len() > 128 {
            bail!("derived run name {} is longer than 128 characters", j.name);
        }
        if !seen.insert(j.name.clone()) {
            bail!("two runs of the sweep would both be named {}", j.name);
        }
    }
    Ok(out)
}

fn env_key(key: &str) -> String {
    format!("DACAPO__{}", key.replace('.', "__").to_uppercase())
}

/// The `dacapo` binary, built in release mode.
fn dacapo_binary() -> Result<PathBuf> {
    status(cargo().args(["build", "--release", "--locked", "-p", "dacapo-cli"]))?;
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run cargo metadata")?;
    let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let target = meta["target_directory"]
        .as_str()
        .context("no target_directory in cargo metadata")?;
    Ok(Path::new(target).join("release").join("dacapo"))
}

/// A string key (`section.key`) of a TOML config file.
fn config_value(config: &Path, section: &str, key: &str) -> Result<Option<String>> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", config.display()))?;
    Ok(table
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_str())
        .map(str::to_owned))
}

fn base_name(config: &Path) -> Result<String> {
    config_value(config, "run", "name")?
        .with_context(|| format!("{}: no [run] name", config.display()))
}

/// Runs the sweep.
pub fn run(args: &SweepArgs) -> Result<()> {
    let bases: Vec<String> = args
        .configs
        .iter()
        .map(|c| base_name(c))
        .collect::<Result<_>>()?;
    let jobs = jobs(&args.configs, &args.sets, &bases)?;
    if args.dry_run {
        for j in &jobs {
            let env: Vec<String> = j
                .overrides
                .iter()
                .map(|(k, v)| format!("{}={v}", env_key(k)))
                .collect();
            println!("{}  {}  {}", j.name, j.config.display(), env.join(" "));
        }
        return Ok(());
    }
    let dacapo = dacapo_binary()?;
    let queue = Mutex::new(jobs.clone().into_iter());
    let results: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let Some(job) = queue.lock().ok().and_then(|mut q| q.next()) else {
                        return;
                    };
                    let outcome = train_one(&dacapo, &job);
                    let line = match &outcome {
                        Ok(s) => s.clone(),
                        Err(e) => format!("failed: {e:#}"),
                    };
                    println!("sweep: {:<40} {line}", job.name);
                    if let Ok(mut r) = results.lock() {
                        r.insert(job.name.clone(), line);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    summary(&dacapo, &jobs)?;
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, v)| v.starts_with("failed"))
        .collect();
    if !failed.is_empty() {
        bail!("{} of {} runs failed", failed.len(), jobs.len());
    }
    Ok(())
}

fn command(dacapo: &Path, job: &Job) -> Command {
    let mut cmd = Command::new(dacapo);
    cmd.env(env_key("run.name"), &job.name);
    for (k, v) in &job.overrides {
        cmd.env(env_key(k), v);
    }
    cmd
}

/// Trains one run to its end (resuming it if it exists); finished runs are only reported.
fn train_one(dacapo: &Path, job: &Job) -> Result<String> {
    let out = command(dacapo, job)
        .args(["train", "--no-progress"])
        .arg(&job.config)
        .stdin(Stdio::null())
        .output()
        .context("cannot start dacapo")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{}", stderr.lines().last().unwrap_or("dacapo train failed"));
    }
    Ok(stderr.lines().last().unwrap_or("done").to_owned())
}

/// Prints `dacapo runs ls` for the runs of the sweep.
fn summary(dacapo: &Path, jobs: &[Job]) -> Result<()> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    let roots: std::collections::BTreeSet<String> = jobs
        .iter()
        .map(|j| {
            config_value(&j.config, "stores", "root")
                .ok()
                .flatten()
                .unwrap_or_else(|| "runs".into())
        })
        .collect();
    let names: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    println!("\n| run | iterations | status | best |\n|---|---|---|---|");
    for root in roots {
        let out = command(dacapo, first)
            .args(["runs", "ls", "--json", "--root", &root])
            .output()
            .context("cannot run dacapo runs ls")?;
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        for r in runs.as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or("?");
            if !names.contains(name) {
                continue;
            }
            let best: Vec<String> = r["best"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    format!(
                        "{}/{} {}@{}",
                        b["dataset"].as_str().unwrap_or("?"),
                        b["criterion"].as_str().unwrap_or("?"),
                        b["value"],
                        b["iteration"]
                    )
                })
                .collect();
            println!(
                "| {name} | {}/{} | {} | {} |",
                r["trained_until"],
                r["train_until"],
                r["status"].as_str().unwrap_or("?"),
                best.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_the_cartesian_product_with_derived_names() {
        let jobs = jobs(
            &[PathBuf::from("a.toml")],
            &[
                "trainer.learning_rate=1e-4,3e-4".into(),
                "run.seed=1,2".into(),
            ],
            &["base".into()],
        )
        .unwrap();
        let names: Vec<_> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "base-learning_rate1e-4-seed1",
                "base-learning_rate1e-4-seed2",
                "base-learning_rate3e-4-seed1",
                "base-learning_rate3e-4-seed2"
            ]
        );
        assert_eq!(
            env_key("trainer.learning_rate"),
            "DACAPO__TRAINER__LEARNING_RATE"
        );
    }

    #[test]
    fn list_values_stay_whole_and_bad_sets_fail() {
        let (k, v) = parse_set("architecture.input_shape=[64,64],[96,96]").unwrap();
        assert_eq!(k, "architecture.input_shape");
        assert_eq!(v, ["[64,64]", "[96,96]"]);
        assert!(parse_set("learning_rate=1").is_err());
        assert!(parse_set("a.b").is_err());
        assert!(parse_set("a.b=1,,2").is_err());
        let dup = jobs(
            &[PathBuf::from("a.toml")],
            &["run.seed=1,1".into()],
            &["x".into()],
        );
        assert!(dup.is_err());
    }
}
