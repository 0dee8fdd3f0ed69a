//! `cargo xtask bench`: runs the benchmark binaries, collects their JSON lines, prints a table.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::{QuickBackend, cargo, root, torch};

/// Arguments of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmarks to run.
    #[arg(value_enum, default_value_t = Suite::All)]
    suite: Suite,
    /// Print ratios against a saved JSON-lines file (e.g. DaCapo's figures).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Smaller sizes, for a quick smoke run.
    #[arg(long)]
    quick: bool,
    /// A Python with torch: also run the PyTorch reference of each training-step workload
    /// (crates/trainer/benches/torch_unet_step.py) and print torch/ours; on the same GPU
    /// when `--device cuda:N`.
    #[arg(long, value_name = "PYTHON")]
    torch: Option<PathBuf>,
    /// Backend of the `train` benchmarks (built in with its cargo feature; `tch` needs
    /// `cargo xtask setup --tch` first).
    #[arg(long, value_enum, default_value_t = QuickBackend::Flex)]
    backend: QuickBackend,
    /// Device of the `train` benchmarks, as `run.device` writes it (`cpu`, `cuda:0`,
    /// `vulkan:1`, `default`).
    #[arg(long, default_value = "default")]
    device: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    Stores,
    Train,
    Predict,
    All,
}

/// (package, bench target) of each suite.
fn targets(suite: Suite) -> Vec<(&'static str, &'static str)> {
    let all = [
        (Suite::Stores, ("dacapo-store", "stores")),
        (Suite::Train, ("dacapo-trainer", "train_step")),
        (Suite::Train, ("dacapo-trainer", "iteration")),
        (Suite::Predict, ("dacapo-validator", "predict")),
    ];
    all.into_iter()
        .filter(|(s, _)| suite == Suite::All || *s == suite)
        .map(|(_, t)| t)
        .collect()
}

/// Builds and runs the train benchmarks on `args.backend` and `args.device`: the backend's
/// cargo feature, and for `tch` the torch venv's libtorch.
fn on_backend(cmd: &mut Command, args: &BenchArgs) -> Result<()> {
    if args.backend != QuickBackend::Flex {
        cmd.args(["--features", args.backend.name()]);
    }
    if args.backend == QuickBackend::Tch {
        let venv = torch::venv_dir();
        if !torch::venv_is_valid(&venv) {
            bail!(
                "--backend tch needs libtorch: no torch {} venv at {} (`cargo xtask setup --tch` \
                 makes it)",
                torch::TORCH_VERSION,
                venv.display()
            );
        }
        torch::build_env(cmd, &venv)?;
    }
    cmd.env("DACAPO_BENCH_BACKEND", args.backend.name())
        .env("DACAPO_BENCH_DEVICE", &args.device);
    Ok(())
}

/// Runs the suite and prints its results.
pub fn run(args: &BenchArgs) -> Result<()> {
    let on_flex = args.backend == QuickBackend::Flex && args.device == "default";
    if !on_flex && args.suite != Suite::Train {
        bail!("--backend and --device apply to `cargo xtask bench train` only");
    }
    let mut results: Vec<Value> = Vec::new();
    for (package, bench) in targets(args.suite) {
        let mut cmd = cargo();
        cmd.args(["bench", "--locked", "-p", package, "--bench", bench])
            .stdout(Stdio::piped());
        if args.quick {
            cmd.env("DACAPO_BENCH_QUICK", "1");
        }
        if args.suite == Suite::Train {
            on_backend(&mut cmd, args)?;
        }
        eprintln!("xtask: running {cmd:?}");
        let mut child = cmd.spawn().context("cannot start cargo bench")?;
        let stdout = child.stdout.take().context("no stdout from cargo bench")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            // Benchmarks print JSON lines and human text; keep the JSON, echo everything.
            println!("{line}");
            if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&line)
                && v.get("workload").is_some()
            {
                results.push(v);
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("cargo bench -p {package} --bench {bench} failed with {status}");
        }
    }
    let torch = match &args.torch {
        Some(python) => torch_side(python, &results)?,
        None => Vec::new(),
    };
    results.extend(torch.iter().cloned());
    let out_dir = root().join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("latest.jsonl");
    let text: String = results.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&out, text).with_context(|| format!("cannot write {}", out.display()))?;
    println!("\n{}", table(&results));
    eprintln!("xtask: results saved to {}", out.display());
    if !torch.is_empty() {
        println!("\n{}", torch_table(&results));
    }
    if let Some(path) = &args.compare {
        println!("\n{}", compare(&results, path)?);
    }
    Ok(())
}

/// Runs the PyTorch reference of every training-step workload in `results` with `python`,
/// on the same input size and thread count, and on the same CUDA GPU where ours ran on one.
fn torch_side(python: &Path, results: &[Value]) -> Result<Vec<Value>> {
    let script = root().join("crates/trainer/benches/torch_unet_step.py");
    let mut out = Vec::new();
    for v in results {
        let dims = match v.get("workload").and_then(Value::as_str) {
            Some("train_step_2d") => 2,
            Some("train_step_3d") => 3,
            _ => continue,
        };
        let size = v.pointer("/input/2").and_then(Value::as_u64).unwrap_or(256);
        let threads = v.get("threads").and_then(Value::as_u64).unwrap_or(1);
        let device = match v.get("device").and_then(Value::as_str) {
            Some(d) if d.starts_with("cuda") => d.to_owned(),
            _ => "cpu".to_owned(),
        };
        let mut cmd = Command::new(python);
        cmd.arg(&script).args([
            size.to_string(),
            threads.to_string(),
            dims.to_string(),
            device,
        ]);
        eprintln!("xtask: running {cmd:?}");
        let output = cmd
            .output()
            .with_context(|| format!("cannot run {}", python.display()))?;
        if !output.status.success() {
            bail!(
                "the PyTorch reference failed ({}); --torch needs a Python with torch \
                 installed:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().last().unwrap_or_default();
        println!("{line}");
        let parsed: Value = serde_json::from_str(line)
            .with_context(|| format!("the PyTorch reference printed {line:?}, not JSON"))?;
        out.push(parsed);
    }
    Ok(out)
}

/// torch/ours per training-step workload (above 1: we are faster).
fn torch_table(results: &[Value]) -> String {
    let is_torch = |v: &Value| {
        v.get("impl")
            .and_then(Value::as_str)
            .is_some_and(|i| i.starts_with("torch"))
    };
    let median = |v: &Value| v.get("median_s").and_then(Value::as_f64);
    let mut out = String::from(
        "| workload | ours on | ours (s) | torch (s) | torch/ours | ours peak RSS (MB) | torch peak RSS (MB) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for theirs in results.iter().filter(|v| is_torch(v)) {
        let workload = theirs.get("workload");
        let Some(ours) = results
            .iter()
            .find(|v| !is_torch(v) && v.get("workload") == workload)
        else {
            continue;
        };
        let (Some(a), Some(b)) = (median(ours), median(theirs)) else {
            continue;
        };
        let rss = |v: &Value| v.get("peak_rss_mb").map_or("?".into(), Value::to_string);
        let text = |key: &str| ours.get(key).and_then(Value::as_str).unwrap_or("?");
        out.push_str(&format!(
            "| {} | {} {} | {a:.4} | {b:.4} | {:.2} | {} | {} |\n",
            workload.and_then(Value::as_str).unwrap_or("?"),
            text("backend"),
            text("device"),
            b / a,
            rss(ours),
            rss(theirs)
        ));
    }
    out
}

/// The headline number of a result and its unit.
fn headline(v: &Value) -> Option<(f64, &'static str)> {
    for (key, unit) in [
        ("median_s", "s"),
        ("last_op_ms", "ms"),
        ("per_op_ms", "ms"),
        ("mb_per_s", "MB/s"),
        ("voxels_per_s", "vox/s"),
        ("seconds", "s"),
    ] {
        if let Some(x) = v.get(key).and_then(Value::as_f64) {
            return Some((x, unit));
        }
    }
    None
}

fn key(v: &Value) -> String {
    let workload = v.get("workload").and_then(Value::as_str).unwrap_or("?");
    match v.get("n") {
        Some(n) => format!("{workload} n={n}"),
        None => workload.to_owned(),
    }
}

fn table(results: &[Value]) -> String {
    let mut out = String::from("| workload | value | unit | details |\n|---|---|---|---|\n");
    for v in results {
        let (x, unit) = headline(v).unwrap_or((f64::NAN, ""));
        let details: Vec<String> = v
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "workload" | "n"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {x:.4} | {unit} | {} |\n",
            key(v),
            details.join(" ")
        ));
    }
    out
}

fn compare(results: &[Value], path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read comparison file {}", path.display()))?;
    let mut theirs: BTreeMap<String, Value> = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON line", path.display(), i + 1))?;
        theirs.insert(key(&v), v);
    }
    let mut out = format!(
        "| workload | ours | theirs ({}) | ratio ours/theirs |\n|---|---|---|---|\n",
        path.display()
    );
    for v in results {
        let k = key(v);
        let (Some((a, unit)), Some((b, _))) = (headline(v), theirs.get(&k).and_then(headline))
        else {
            continue;
        };
        out.push_str(&format!(
            "| {k} | {a:.4} {unit} | {b:.4} {unit} | {:.3} |\n",
            a / b
        ));
    }
    Ok(out)
}
