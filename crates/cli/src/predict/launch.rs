//! Running a prediction job's workers and waiting for them: one worker in this process, a pool
//! of `dacapo predict-worker` processes on this machine, or one SLURM job array.
//!
//! Before a launch, no worker of an earlier one may still run (checked with the ledger's
//! worker lock, and for SLURM with the queue); the claims and failures of earlier launches
//! are then cleared, so their blocks are done again. A local worker that dies (killed by a
//! signal, or a panic) is started again, at most [`MAX_RESTARTS`] times; it takes over the
//! block it held. SLURM requeues its tasks itself (`--requeue`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dacapo_models::{Task, UNet};
use dacapo_runtime::Progress;
use dacapo_runtime::progress::BlockProgress;
use dacapo_validator::ledger::{Launch, now};
use dacapo_validator::{BlockWorker, Ledger, PostProcess, PredictSpec};

use super::PredictArgs;
use crate::submit::{Executor, append_output_to, sbatch, sh_quote, squeue_jobs};

/// How often a local worker that died is started again.
pub(super) const MAX_RESTARTS: u32 = 2;
/// How often the coordinator looks at the ledger while it waits.
const POLL: Duration = Duration::from_millis(250);

/// What a worker in this process uses: the coordinator's loaded network.
pub(super) struct Local<'a> {
    /// The network with the job's checkpoint.
    pub model: &'a UNet,
    /// Its task.
    pub task: &'a Task,
    /// The post-processing, when the job writes labels.
    pub post: Option<&'a PostProcess>,
    /// CPU threads per worker (`None`: all cores).
    pub threads: Option<usize>,
}

/// CPU threads of each worker: `run.threads` when set; else the cores split among local
/// workers (`None`, all cores, for one worker and for SLURM tasks, which get their own CPUs).
pub(super) fn threads_per_worker(
    configured: Option<usize>,
    workers: u32,
    executor: Executor,
) -> Option<usize> {
    if configured.is_some() || executor == Executor::Slurm || workers <= 1 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Some((cores / workers as usize).max(1))
}

fn done_count(ledger: &Ledger, total: usize) -> Result<usize> {
    Ok(ledger.done_blocks(total)?.iter().filter(|d| **d).count())
}

/// Runs the job's workers as `args` asks and waits for them; returns the seconds it took, or
/// `None` when SLURM workers were submitted without `--wait`.
pub(super) fn launch(
    spec: &PredictSpec,
    ledger: &Ledger,
    args: &PredictArgs,
    local: &Local,
    progress: &dyn Progress,
) -> Result<Option<f64>> {
    let start = Instant::now();
    let total = spec.grid.blocks;
    let workers = args.workers as usize;
    if args.executor == Executor::Slurm {
        check_slurm_idle(ledger)?;
    }
    ledger.check_no_workers()?;
    ledger.reset_workers()?;
    let mut launch = Launch {
        workers,
        executor: match args.executor {
            Executor::Local => "local",
            Executor::Slurm => "slurm",
        }
        .to_owned(),
        slurm_job: None,
        started: now(),
        done_at_start: done_count(ledger, total)?,
    };
    ledger.write_launch(&launch)?;
    let mut bar = progress.blocks("predict", total as u64);
    bar.set(launch.done_at_start as u64);
    match (args.executor, workers) {
        (Executor::Local, 1) => {
            let worker = BlockWorker {
                spec,
                model: local.model,
                task: local.task,
                post: local.post,
                worker: 0,
                workers: 1,
            };
            let mut done = launch.done_at_start as u64;
            worker.run(&mut |_| {
                done += 1;
                bar.set(done);
            })?;
        }
        (Executor::Local, _) => pool(spec, ledger, workers, local.threads, &mut *bar)?,
        (Executor::Slurm, _) => {
            let id = submit_array(spec, ledger, args)?;
            launch.slurm_job = Some(id.clone());
            ledger.write_launch(&launch)?;
            let output = spec.output.container.join(&spec.output.array);
            eprintln!(
                "submitted {workers} workers as SLURM job array {id} (logs in {}); follow with \
                 `dacapo predict --status {}`",
                ledger.dir().join("logs").display(),
                output.display()
            );
            if !args.wait {
                return Ok(None);
            }
            wait_slurm(ledger, total, &id, &mut *bar)?;
        }
    }
    drop(bar);
    check_finished(spec, ledger)?;
    Ok(Some(start.elapsed().as_secs_f64()))
}

/// Fails with what is left when blocks failed or are not done.
fn check_finished(spec: &PredictSpec, ledger: &Ledger) -> Result<()> {
    let Some(status) = ledger.status()? else {
        bail!("the job's ledger {} disappeared", ledger.dir().display());
    };
    let output = spec.output.container.join(&spec.output.array);
    if let Some((i, message)) = status.failed.first() {
        bail!(
            "{} of {} blocks failed (block {i}: {message}); see `dacapo predict --status {}` \
             and rerun the same command to retry them",
            status.failed.len(),
            status.total,
            output.display()
        );
    }
    if status.done < status.total {
        bail!(
            "{} of {} blocks are not done (workers ended early; logs in {}); rerun the same \
             command to resume",
            status.total - status.done,
            status.total,
            ledger.dir().join("logs").display()
        );
    }
    Ok(())
}

/// The `dacapo predict-worker` arguments of worker `worker` (none for a SLURM array task).
fn worker_args(spec: &PredictSpec, worker: Option<usize>, workers: usize) -> Vec<String> {
    let mut out = vec![
        "predict-worker".to_owned(),
        "--container".to_owned(),
        spec.output.container.to_string_lossy().into_owned(),
        "--array".to_owned(),
        spec.output.array.clone(),
        "--workers".to_owned(),
        workers.to_string(),
    ];
    if let Some(w) = worker {
        out.extend(["--worker".to_owned(), w.to_string()]);
    }
    out
}

/// One local worker process.
struct Slot {
    worker: usize,
    child: Option<Child>,
    restarts: u32,
}

fn spawn_worker(
    exe: &Path,
    spec: &PredictSpec,
    logs: &Path,
    worker: usize,
    workers: usize,
    threads: Option<usize>,
) -> Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(worker_args(spec, Some(worker), workers))
        .stdin(Stdio::null());
    append_output_to(&mut cmd, &logs.join(format!("worker-{worker}.log")))?;
    if let Some(t) = threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start worker {worker} ({})", exe.display()))
}

/// Whether a worker that ended this way should be started again: it was killed or panicked
/// (an error it reported would only repeat).
fn died(status: ExitStatus) -> bool {
    #[cfg(unix)]
    if std::os::unix::process::ExitStatusExt::signal(&status).is_some() {
        return true;
    }
    status.code() == Some(101)
}

/// Runs `workers` local worker processes until all have ended.
fn pool(
    spec: &PredictSpec,
    ledger: &Ledger,
    workers: usize,
    threads: Option<usize>,
    bar: &mut dyn BlockProgress,
) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the path of this dacapo binary")?;
    let logs: PathBuf = ledger.dir().join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut slots = Vec::with_capacity(workers);
    for worker in 0..workers {
        let child = spawn_worker(&exe, spec, &logs, worker, workers, threads)?;
        slots.push(Slot {
            worker,
            child: Some(child),
            restarts: 0,
        });
    }
    let total = spec.grid.blocks;
    let mut last_count = Instant::now();
    while slots.iter().any(|s| s.child.is_some()) {
        std::thread::sleep(POLL);
        for slot in &mut slots {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            let Some(status) = child.try_wait().context("cannot wait for a worker")? else {
                continue;
            };
            slot.child = None;
            if status.success() {
                continue;
            }
            let log = logs.join(format!("worker-{}.log", slot.worker));
            if died(status) && slot.restarts < MAX_RESTARTS {
                slot.restarts += 1;
                tracing::warn!(
                    "worker {} ended ({status}); starting it again ({} of {MAX_RESTARTS})",
                    slot.worker,
                    slot.restarts
                );
                slot.child = Some(spawn_worker(
                    &exe,
                    spec,
                    &logs,
                    slot.worker,
                    workers,
                    threads,
                )?);
            } else {
                tracing::warn!(
                    "worker {} ended ({status}); log {}",
                    slot.worker,
                    log.display()
                );
            }
        }
        if last_count.elapsed() >= Duration::from_secs(1) {
            bar.set(done_count(ledger, total)? as u64);
            last_count = Instant::now();
        }
    }
    bar.set(done_count(ledger, total)? as u64);
    Ok(())
}

/// Fails while the SLURM job array of the previous launch is still queued or running.
fn check_slurm_idle(ledger: &Ledger) -> Result<()> {
    let Some(id) = ledger.launch().and_then(|l| l.slurm_job) else {
        return Ok(());
    };
    if let Some(job) = slurm_state(&id)? {
        bail!(
            "SLURM job array {id} of the previous launch on this output is still {job}; wait \
             for it (`dacapo predict --status`) or cancel it (`scancel {id}`)"
        );
    }
    Ok(())
}

/// `queued`/`running` while any task of SLURM job `id` is in the queue, else `None`.
pub(super) fn slurm_state(id: &str) -> Result<Option<String>> {
    let Some(jobs) = squeue_jobs(Duration::from_secs(30))? else {
        return Ok(None);
    };
    let tasks: Vec<_> = jobs
        .iter()
        .filter(|j| j.id == id || j.id.starts_with(&format!("{id}_")))
        .collect();
    if tasks.is_empty() {
        return Ok(None);
    }
    let running = tasks.iter().filter(|j| j.is_running()).count();
    Ok(Some(if running > 0 {
        format!("running ({running} tasks)")
    } else {
        "queued".to_owned()
    }))
}

/// Writes the job array's sbatch script next to the ledger and submits it; returns its id.
fn submit_array(spec: &PredictSpec, ledger: &Ledger, args: &PredictArgs) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the path of this dacapo binary")?;
    let workdir = std::env::current_dir().context("cannot read the working directory")?;
    let logs = ledger.dir().join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let workers = args.workers as usize;
    let mut s = String::from("#!/bin/bash\n");
    let mut lines = vec![
        format!("--job-name=dacapo-predict-{}", spec.run),
        format!("--array=0-{}", workers - 1),
        format!("--output={}", logs.join("slurm-%A_%a.out").display()),
        "--open-mode=append".to_owned(),
        "--requeue".to_owned(),
        format!("--chdir={}", workdir.display()),
        format!(
            "--comment={}",
            spec.output.container.join(&spec.output.array).display()
        ),
    ];
    lines.extend(args.slurm.sbatch_lines());
    for line in lines {
        s.push_str(&format!("#SBATCH {line}\n"));
    }
    let command: Vec<String> = std::iter::once(exe.to_string_lossy().into_owned())
        .chain(worker_args(spec, None, workers))
        .map(|a| sh_quote(&a))
        .collect();
    s.push_str(&format!(
        "\n# Each task takes blocks until none is left; a requeued task resumes its block.\n\
         set -eu\n\
         echo \"dacapo predict worker ${{SLURM_ARRAY_TASK_ID}} of job ${{SLURM_ARRAY_JOB_ID}} \
         (restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname) at $(date -Is)\"\n\
         exec {} --worker \"$SLURM_ARRAY_TASK_ID\"\n",
        command.join(" ")
    ));
    let path = ledger.dir().join("predict.sbatch");
    std::fs::write(&path, &s).with_context(|| format!("cannot write {}", path.display()))?;
    sbatch(&path)
}

/// Waits until SLURM job array `id` has left the queue, showing the blocks done.
fn wait_slurm(ledger: &Ledger, total: usize, id: &str, bar: &mut dyn BlockProgress) -> Result<()> {
    let mut last_queue = Instant::now() - Duration::from_secs(60);
    loop {
        bar.set(done_count(ledger, total)? as u64);
        if last_queue.elapsed() >= Duration::from_secs(2) {
            if slurm_state(id)?.is_none() {
                bar.set(done_count(ledger, total)? as u64);
                return Ok(());
            }
            last_queue = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
