//! `dacapo submit`: queue runs on SLURM (one resumable sbatch job per run) or start them
//! detached on this machine.
//!
//! A job runs this same `dacapo` binary with `train CONFIG`, which resumes from the run's latest
//! checkpoint; so a requeued or restarted job continues where the last one stopped.

use std::fmt::Write as _;
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use dacapo_core::{RunConfig, RunName};
use dacapo_store::{RunLock, WeightsStore, layout};

use crate::RootArg;

/// Where jobs run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// Jobs on the SLURM cluster this machine submits to (sbatch).
    Slurm,
    /// Processes on this machine.
    Local,
}

/// Arguments of `dacapo submit`.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// Run configs (TOML), one job per config.
    #[arg(required = true)]
    pub configs: Vec<PathBuf>,
    /// Where the jobs run.
    #[arg(long, value_enum, default_value = "slurm")]
    pub executor: Executor,
    #[command(flatten)]
    pub slurm: SlurmOptions,
    /// Print the job scripts (or commands) and submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub root: RootArg,
}

/// Resources of SLURM jobs (`dacapo submit`, `dacapo predict --executor slurm`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SlurmOptions {
    /// GPUs per job (`#SBATCH --gpus`).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Time limit per job, `[D-]HH:MM:SS` (`#SBATCH --time`).
    #[arg(long, value_parser = parse_time)]
    pub time: Option<String>,
    /// SLURM partition (`#SBATCH --partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// CPUs per job (`#SBATCH --cpus-per-task`).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory per job, e.g. `16G` (`#SBATCH --mem`).
    #[arg(long, value_parser = parse_mem)]
    pub mem: Option<String>,
}

impl SlurmOptions {
    /// The `#SBATCH` lines of these resources.
    pub fn sbatch_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(g) = self.gpus {
            out.push(format!("--gpus={g}"));
        }
        if let Some(t) = &self.time {
            out.push(format!("--time={t}"));
        }
        if let Some(p) = &self.partition {
            out.push(format!("--partition={p}"));
        }
        if let Some(c) = self.cpus {
            out.push(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &self.mem {
            out.push(format!("--mem={m}"));
        }
        out
    }
}

/// Checks a SLURM time limit: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`.
fn parse_time(s: &str) -> Result<String, String> {
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let ok = days.is_none_or(digits) && parts.len() <= 3 && parts.iter().all(|p| digits(p));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a SLURM time limit; write HH:MM:SS or D-HH:MM:SS (e.g. 02:00:00)"
        ))
    }
}

/// Checks a SLURM memory size: a number with an optional K, M, G or T suffix.
fn parse_mem(s: &str) -> Result<String, String> {
    let num = s.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    if !num.is_empty() && num.len() + 1 >= s.len() && num.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a memory size; write a number with an optional K, M, G or T suffix \
             (e.g. 16G)"
        ))
    }
}

/// One run to submit.
struct Job {
    /// Absolute path of its config.
    config: PathBuf,
    /// The run name.
    run: RunName,
    /// `run.train_until`.
    train_until: u64,
    /// The store root: `--root`/`DACAPO_ROOT`, else as the config names it (relative to the
    /// working directory).
    root: PathBuf,
    /// The arguments of the job's `dacapo train` (`--root` when it was given, the config).
    train_args: Vec<String>,
    /// `<root>/<run>/submit`, absolute.
    submit_dir: PathBuf,
    /// The run's weights store (local, or the object store its config names).
    weights: std::sync::Arc<dyn WeightsStore>,
}

/// A job of the current user as `squeue` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlurmJob {
    /// Job name (`dacapo-<run>` for submitted runs).
    pub name: String,
    /// SLURM state (`PENDING`, `RUNNING`, ...).
    pub state: String,
    /// Job id.
    pub id: String,
    /// Job comment: the absolute run directory for jobs `dacapo submit` queued.
    pub comment: String,
}

impl SlurmJob {
    /// Whether the job runs now (rather than waits in the queue).
    pub fn is_running(&self) -> bool {
        matches!(
            self.state.as_str(),
            "RUNNING" | "CONFIGURING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT"
        )
    }

    /// `queued (slurm 123)` or `running (slurm 123)`.
    pub fn describe(&self) -> String {
        let what = if self.is_running() {
            "running"
        } else {
            "queued"
        };
        format!("{what} (slurm {})", self.id)
    }
}

/// The `squeue --format` that [`parse_squeue`] reads: name, state, id, comment.
const SQUEUE_FORMAT: &str = "%j|%T|%i|%k";

/// The SLURM job name of run `run`.
pub(crate) fn job_name(run: &str) -> String {
    format!("dacapo-{run}")
}

/// Parses `squeue --noheader --format=%j|%T|%i|%k` output, keeping `dacapo-*` jobs.
pub(crate) fn parse_squeue(text: &str) -> Vec<SlurmJob> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().splitn(4, '|');
            let name = f.next()?.trim();
            let state = f.next()?.trim();
            let id = f.next()?.trim();
            let comment = f.next().unwrap_or("").trim();
            // squeue prints `(null)` for a job without comment.
            let comment = if comment == "(null)" { "" } else { comment };
            (name.starts_with("dacapo-") && !id.is_empty()).then(|| SlurmJob {
                name: name.to_owned(),
                state: state.to_owned(),
                id: id.to_owned(),
                comment: comment.to_owned(),
            })
        })
        .collect()
}

/// The queued or running job of run `run` whose directory is `run_dir`, if any.
///
/// Jobs another root's run of the same name queued carry another directory as comment and are
/// not this run's; jobs without comment (queued by hand) match by name alone.
pub(crate) fn job_of<'a>(jobs: &'a [SlurmJob], run: &str, run_dir: &Path) -> Option<&'a SlurmJob> {
    let name = job_name(run);
    jobs.iter()
        .find(|j| j.name == name && (j.comment.is_empty() || Path::new(&j.comment) == run_dir))
}

/// The current user's `dacapo-*` SLURM jobs; `Ok(None)` when `squeue` is not installed.
///
/// A controller that does not answer makes squeue retry for many seconds: after `timeout`
/// it is killed and this fails.
pub(crate) fn squeue_jobs(timeout: Duration) -> Result<Option<Vec<SlurmJob>>> {
    let mut child = match Command::new("squeue")
        .args(["--noheader", "--me", &format!("--format={SQUEUE_FORMAT}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot run squeue"),
    };
    // Read on threads so a long job list cannot fill the pipe and stall squeue.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for squeue")? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "squeue did not answer within {} s; is the SLURM controller up (`sinfo`)? \
                 SLURM_CONF={}",
                timeout.as_secs(),
                slurm_conf()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    // Client tools installed without any cluster configured: no SLURM here.
    if !status.success() && stderr.contains("Could not establish a configuration source") {
        return Ok(None);
    }
    if !status.success() {
        bail!(
            "squeue failed ({status}): {}; is the SLURM controller up (`sinfo`)? SLURM_CONF={}",
            stderr.trim(),
            slurm_conf()
        );
    }
    Ok(Some(parse_squeue(&stdout)))
}

fn slurm_conf() -> String {
    std::env::var("SLURM_CONF").unwrap_or_else(|_| "(default)".to_owned())
}

/// `path` made absolute against the working directory, without resolving links.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// Loads every config first, so a bad one stops the submission before any job is queued.
fn load_jobs(configs: &[PathBuf], root_arg: &RootArg) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    for path in configs {
        let abs = fs::canonicalize(path)
            .with_context(|| format!("cannot read the config {}", path.display()))?;
        let mut config = RunConfig::load(&abs)
            .with_context(|| format!("invalid run config {}", path.display()))?;
        let mut train_args = vec!["train".to_owned()];
        // The same root as `dacapo train` would use, passed on to the job explicitly.
        if let Some(root) = &root_arg.root {
            config.stores.root = absolute(root)?;
            train_args.extend([
                "--root".to_owned(),
                config.stores.root.display().to_string(),
            ]);
        }
        train_args.push(abs.display().to_string());
        let run = config.run.name.clone();
        if let Some(other) = jobs.iter().find(|j| j.run == run) {
            bail!(
                "{} and {} both name run `{run}`; give each run its own name",
                other.config.display(),
                abs.display()
            );
        }
        let root = config.stores.root.clone();
        let submit_dir = layout::submit_dir(&absolute(&root)?, &run);
        let weights = dacapo_runtime::Stores::open_weights(&config)
            .with_context(|| format!("cannot open the weights store of run `{run}`"))?;
        jobs.push(Job {
            config: abs,
            run,
            train_until: config.run.train_until,
            root,
            train_args,
            submit_dir,
            weights,
        });
    }
    Ok(jobs)
}

/// Why a run is not submitted again, if it should not be.
fn skip_reason(job: &Job, slurm: Option<&[SlurmJob]>) -> Result<Option<String>> {
    let latest = job
        .weights
        .latest_iteration(&job.run)
        .with_context(|| format!("cannot read the checkpoints of run `{}`", job.run))?;
    if let Some(l) = latest.filter(|&l| l >= job.train_until) {
        return Ok(Some(format!(
            "finished (checkpoint {l} of {})",
            job.train_until
        )));
    }
    let run_dir = job.submit_dir.parent().unwrap_or(&job.submit_dir);
    if let Some(j) = slurm.and_then(|jobs| job_of(jobs, job.run.as_str(), run_dir)) {
        return Ok(Some(format!("already {}", j.describe())));
    }
    if let Some(holder) = RunLock::holder(&job.root, &job.run)
        .with_context(|| format!("cannot probe the lock of run `{}`", job.run))?
    {
        return Ok(Some(format!("being trained by {holder}")));
    }
    Ok(None)
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The sbatch script of `job`: runs `exe train CONFIG` in `workdir`.
fn sbatch_script(job: &Job, args: &SubmitArgs, exe: &Path, workdir: &Path) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let mut opt = |line: String| {
        let _ = writeln!(s, "#SBATCH {line}");
    };
    opt(format!("--job-name={}", job_name(job.run.as_str())));
    opt(format!(
        "--output={}",
        job.submit_dir.join("slurm-%j.out").display()
    ));
    opt("--open-mode=append".to_owned());
    opt("--requeue".to_owned());
    opt(format!("--chdir={}", workdir.display()));
    if let Some(run_dir) = job.submit_dir.parent() {
        opt(format!("--comment={}", run_dir.display()));
    }
    for line in args.slurm.sbatch_lines() {
        opt(line);
    }
    let _ = write!(
        s,
        "\n# Resumes from the latest checkpoint, so a requeued job continues the run.\n\
         set -eu\n\
         cd {}\n\
         echo \"dacapo job ${{SLURM_JOB_ID:-}} (restart ${{SLURM_RESTART_COUNT:-0}}) on \
         $(hostname) at $(date -Is)\"\n\
         exec {} {}\n",
        sh_quote(&workdir.to_string_lossy()),
        sh_quote(&exe.to_string_lossy()),
        quoted_args(&job.train_args),
    );
    s
}

/// `args` quoted for a shell, separated by spaces.
fn quoted_args(args: &[String]) -> String {
    args.iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `dacapo submit`.
pub fn run(args: &SubmitArgs) -> Result<()> {
    let jobs = load_jobs(&args.configs, &args.root)?;
    let exe = std::env::current_exe().context("cannot find the path of this dacapo binary")?;
    let workdir = std::env::current_dir().context("cannot read the working directory")?;
    // One squeue call for all runs. Local runs need not see SLURM, so a broken one is ignored.
    let submits = args.executor == Executor::Slurm && !args.dry_run;
    let slurm = match squeue_jobs(Duration::from_secs(30)) {
        Ok(jobs) => jobs,
        Err(e) if submits => return Err(e),
        Err(_) => None,
    };
    if submits && slurm.is_none() {
        bail!(sbatch_missing());
    }
    for job in &jobs {
        if let Some(why) = skip_reason(job, slurm.as_deref())? {
            println!("{}: skipped, {why}", job.run);
            continue;
        }
        match args.executor {
            Executor::Slurm => submit_slurm(job, args, &exe, &workdir)?,
            Executor::Local => start_local(job, args.dry_run, &exe, &workdir)?,
        }
    }
    Ok(())
}

/// Why there is no SLURM to submit to, and what to do instead.
pub(crate) fn sbatch_missing() -> String {
    let installed = Command::new("sbatch")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let why = if installed {
        "SLURM's client tools are installed but no cluster is configured (no slurm.conf; set \
         SLURM_CONF to the cluster's config)"
    } else {
        "sbatch not found on PATH (SLURM's client tools are not installed here)"
    };
    format!(
        "{why}: train on this machine with `--executor local`, or start a single-node SLURM \
         with `cargo xtask services up slurm` and use the SLURM_CONF it prints with `cargo \
         xtask services env`"
    )
}

/// Submits the script at `path` with `sbatch --parsable`; returns the job id.
pub(crate) fn sbatch(path: &Path) -> Result<String> {
    let out = match Command::new("sbatch")
        .arg("--parsable")
        .arg(path)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(sbatch_missing()),
        Err(e) => return Err(e).context("cannot run sbatch"),
    };
    if !out.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // `--parsable` prints `id` or `id;cluster`.
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .trim()
        .split(';')
        .next()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("sbatch printed no job id for {}", path.display()))
}

fn submit_slurm(job: &Job, args: &SubmitArgs, exe: &Path, workdir: &Path) -> Result<()> {
    let script = sbatch_script(job, args, exe, workdir);
    let path = job.submit_dir.join(format!("{}.sbatch", job.run));
    if args.dry_run {
        print!("# {}\n{script}\n", path.display());
        return Ok(());
    }
    fs::create_dir_all(&job.submit_dir)
        .with_context(|| format!("cannot create {}", job.submit_dir.display()))?;
    fs::write(&path, &script).with_context(|| format!("cannot write {}", path.display()))?;
    let id = sbatch(&path)?;
    println!(
        "{} -> slurm job {id} (log {})",
        job.run,
        job.submit_dir.join(format!("slurm-{id}.out")).display()
    );
    Ok(())
}

/// Sends the stdout and stderr of `cmd` to the end of the log file `path` (created if missing).
pub(crate) fn append_output_to(cmd: &mut Command, path: &Path) -> Result<()> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let err = file
        .try_clone()
        .with_context(|| format!("cannot open {}", path.display()))?;
    cmd.stdout(file).stderr(err);
    Ok(())
}

fn start_local(job: &Job, dry_run: bool, exe: &Path, workdir: &Path) -> Result<()> {
    let log = job.submit_dir.join("local.log");
    if dry_run {
        println!(
            "# {}\ncd {} && {} {} >> {} 2>&1 &",
            job.run,
            sh_quote(&workdir.to_string_lossy()),
            sh_quote(&exe.to_string_lossy()),
            quoted_args(&job.train_args),
            sh_quote(&log.to_string_lossy()),
        );
        return Ok(());
    }
    fs::create_dir_all(&job.submit_dir)
        .with_context(|| format!("cannot create {}", job.submit_dir.display()))?;
    let mut cmd = Command::new(exe);
    // Its log is a file: progress comes as a plain line every 10 s and one per validation.
    cmd.args(&job.train_args)
        .current_dir(workdir)
        .stdin(Stdio::null());
    append_output_to(&mut cmd, &log)?;
    // Its own process group: Ctrl-C in this terminal does not reach the trainer.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {} for run `{}`", exe.display(), job.run))?;
    println!("{} -> pid {} (log {})", job.run, child.id(), log.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_output_is_parsed_and_matched_to_runs() {
        let text = "dacapo-a|RUNNING|12|/r/a\n\
                    other-job|PENDING|13|(null)\n\
                    dacapo-b|PENDING|14|(null)\n\
                    dacapo-a|PENDING|15|/elsewhere/a\n\
                    \n\
                    garbage\n";
        let jobs = parse_squeue(text);
        assert_eq!(jobs.len(), 3, "{jobs:?}");
        assert_eq!(
            jobs[0],
            SlurmJob {
                name: "dacapo-a".into(),
                state: "RUNNING".into(),
                id: "12".into(),
                comment: "/r/a".into(),
            }
        );
        assert_eq!(jobs[1].comment, "");
        assert_eq!(jobs[0].describe(), "running (slurm 12)");
        assert_eq!(jobs[1].describe(), "queued (slurm 14)");
        assert_eq!(job_of(&jobs, "a", Path::new("/r/a")).unwrap().id, "12");
        assert_eq!(
            job_of(&jobs, "a", Path::new("/elsewhere/a")).unwrap().id,
            "15"
        );
        assert!(job_of(&jobs, "a", Path::new("/third/a")).is_none());
        // A job without comment matches by name.
        assert_eq!(job_of(&jobs, "b", Path::new("/any/b")).unwrap().id, "14");
        assert!(job_of(&jobs, "c", Path::new("/r/c")).is_none());
    }

    #[test]
    fn time_and_memory_are_checked() {
        for ok in ["30", "02:00:00", "1-12:00:00", "1-12", "90:00"] {
            assert_eq!(parse_time(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "2h", "1:2:3:4", "-1", "a-02:00:00", "02::00"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        for ok in ["16G", "512", "4000M"] {
            assert_eq!(parse_mem(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "G", "16GB", "1.5G", "x"] {
            assert!(parse_mem(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shell_quoting_keeps_plain_paths_and_quotes_the_rest() {
        assert_eq!(sh_quote("/a/b-c_d.toml"), "/a/b-c_d.toml");
        assert_eq!(sh_quote("/a b/c"), "'/a b/c'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
