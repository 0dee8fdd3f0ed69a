//! `dacapo predict --status OUTPUT`: how far a prediction job is.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};
use dacapo_validator::Ledger;
use dacapo_validator::ledger::{Status, claims_by_worker, now};

use super::launch::slurm_state;
use super::output_path;

/// `1h 02m`, `3m 05s` or `12s`.
pub(super) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

/// The status report of a job (without the SLURM queue state).
pub(super) fn report(status: &Status) -> String {
    let job = &status.job;
    let mut out = String::new();
    let percent = 100.0 * status.done as f64 / status.total.max(1) as f64;
    let _ = writeln!(
        out,
        "{}/{}: {}/{} blocks done ({percent:.1}%), {} in progress, {} failed",
        job.output.container.display(),
        job.output.array,
        status.done,
        status.total,
        status.claimed.len(),
        status.failed.len()
    );
    let _ = writeln!(
        out,
        "  run `{}` checkpoint {}, input {}/{}{}",
        job.run,
        job.iteration,
        job.input.container.display(),
        job.input.array,
        job.post_process
            .as_ref()
            .map(|p| format!(", labels with {p}"))
            .unwrap_or_default()
    );
    if let Some(l) = &status.launch {
        let _ = writeln!(
            out,
            "  launch: {} workers ({}{}), started {} ago",
            l.workers,
            l.executor,
            l.slurm_job
                .as_ref()
                .map(|j| format!(" job {j}"))
                .unwrap_or_default(),
            duration(Duration::from_secs_f64((now() - l.started).max(0.0)))
        );
    }
    if status.done < status.total {
        match (status.rate, status.eta()) {
            (Some(rate), Some(eta)) => {
                let _ = writeln!(out, "  rate {rate:.2} blocks/s, ETA {}", duration(eta));
            }
            _ => {
                let _ = writeln!(out, "  ETA unknown (no block finished in this launch yet)");
            }
        }
    }
    for (worker, blocks) in claims_by_worker(&status.claimed) {
        let _ = writeln!(out, "  {worker}: block {blocks:?}");
    }
    for (i, message) in &status.failed {
        let first = message.lines().next().unwrap_or_default();
        let _ = writeln!(out, "  failed block {i}: {first}");
    }
    out
}

/// Prints the status of the prediction job in `output`.
pub(super) fn print(output: &str) -> Result<()> {
    let (container, array) = output_path(output)?;
    let ledger = Ledger::new(&container, &array);
    let Some(status) = ledger.status()? else {
        bail!(
            "{}/{array} has no prediction job (no {}); was it written by `dacapo predict`?",
            container.display(),
            ledger.dir().join("job.json").display()
        );
    };
    print!("{}", report(&status));
    if let Some(id) = status.launch.as_ref().and_then(|l| l.slurm_job.as_ref()) {
        match slurm_state(id) {
            Ok(Some(state)) => println!("  SLURM job {id}: {state}"),
            Ok(None) => println!("  SLURM job {id}: no longer queued"),
            Err(e) => println!("  SLURM job {id}: unknown ({e:#})"),
        }
    }
    Ok(())
}
