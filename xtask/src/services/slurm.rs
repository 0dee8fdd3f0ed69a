//! The slurm service of `cargo xtask services`: a single-node SLURM on localhost (Debian's
//! `slurm-wlm`), with munge, slurmctld and slurmd started as daemons (no systemd needed) and all
//! their state, config and logs under `<dir>/slurm`.
//!
//! Nothing under /etc is touched: the config is `<dir>/slurm/slurm.conf`, named to every SLURM
//! client by `SLURM_CONF`, and munge runs with its own key and socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::CannotInstall;

/// The binaries this service needs, each from `slurm-wlm` or `munge`.
const BINARIES: &[&str] = &[
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "sinfo",
    "scontrol",
    "munged",
    "mungekey",
];

/// Where the daemons' files live.
struct Paths {
    base: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Self {
        Self {
            base: dir.join("slurm"),
        }
    }
    fn conf(&self) -> PathBuf {
        self.base.join("slurm.conf")
    }
    fn f(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }
}

/// Starts slurm under `dir` (or finds it running); returns the variables its tests read.
pub fn up(dir: &Path) -> Result<Vec<(String, String)>> {
    let p = Paths::new(dir);
    let vars = vec![
        ("DACAPO_TEST_SLURM".to_owned(), "1".to_owned()),
        ("SLURM_CONF".to_owned(), p.conf().display().to_string()),
    ];
    let ctld_up = pid_alive(&p.f("slurmctld.pid"));
    let d_up = pid_alive(&p.f("slurmd.pid"));
    if p.conf().exists() && ctld_up && d_up {
        // Running daemons are never restarted: that would kill the jobs of whoever uses them.
        eprintln!("xtask: slurm already running ({})", p.conf().display());
    } else {
        install()?;
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(p.f(sub))
                .with_context(|| format!("cannot create {}", p.f(sub).display()))?;
        }
        start_munge(&p)?;
        if !p.conf().exists() {
            write_conf(&p)?;
        }
        let conf = p.conf();
        if !ctld_up {
            run(Command::new("slurmctld").arg("-f").arg(&conf), "slurmctld")?;
        }
        if !d_up {
            run(
                Command::new("slurmd")
                    .arg("-f")
                    .arg(&conf)
                    .args(["-N", "localhost"]),
                "slurmd",
            )?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node_idle(&p) {
        if Instant::now() > deadline {
            bail!(
                "the SLURM node did not become ready within 60 s; see {} and {}",
                p.f("log/slurmctld.log").display(),
                p.f("log/slurmd.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(vars)
}

/// Stops slurm and removes its state under `dir`.
pub fn down(dir: &Path) -> Result<()> {
    let p = Paths::new(dir);
    if p.conf().exists() {
        // Queued jobs would be restarted by the next `up` from the saved state: cancel them.
        let _ = Command::new("scancel")
            .arg("--full")
            .arg("--me")
            .env("SLURM_CONF", p.conf())
            .stderr(Stdio::null())
            .status();
    }
    stop_daemon(&p.f("slurmd.pid"));
    stop_daemon(&p.f("slurmctld.pid"));
    stop_daemon(&p.f("munged.pid"));
    match std::fs::remove_dir_all(&p.base) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.base.display()))
        }
        _ => Ok(()),
    }
}

fn on_path(bin: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(bin).is_file())
}

/// Installs `slurm-wlm` and `munge` with apt-get when a binary is missing.
fn install() -> Result<()> {
    install_packages().map_err(|e| CannotInstall(format!("{e:#}")).into())
}

/// [`install`], its errors not yet marked as "cannot install".
fn install_packages() -> Result<()> {
    let missing: Vec<&str> = BINARIES.iter().copied().filter(|b| !on_path(b)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!(
            "{} missing and there is no apt-get to install slurm-wlm and munge; install SLURM \
             by hand",
            missing.join(", ")
        );
    }
    if !is_root() {
        bail!(
            "{} missing; installing slurm-wlm and munge needs root: run `sudo apt-get install \
             slurm-wlm munge`, then again `cargo xtask services up slurm` (as root: the daemons \
             run as root)",
            missing.join(", ")
        );
    }
    eprintln!(
        "xtask: installing slurm-wlm and munge (missing: {})",
        missing.join(", ")
    );
    let apt = |args: &[&str]| {
        run(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get",
        )
    };
    if apt(&[
        "install",
        "-y",
        "--no-install-recommends",
        "slurm-wlm",
        "munge",
    ])
    .is_err()
    {
        apt(&["update"])?;
        apt(&[
            "install",
            "-y",
            "--no-install-recommends",
            "slurm-wlm",
            "munge",
        ])?;
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `cmd` to completion, failing with its stderr.
fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts munged with a key and socket of its own, unless it already answers there.
fn start_munge(p: &Paths) -> Result<()> {
    let key = p.f("munge.key");
    if !key.exists() {
        run(
            Command::new("mungekey")
                .arg("--create")
                .arg(format!("--keyfile={}", key.display())),
            "mungekey",
        )?;
    }
    if pid_alive(&p.f("munged.pid")) {
        return Ok(());
    }
    run(
        Command::new("munged")
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--socket={}", p.f("munge.socket").display()))
            .arg(format!("--pid-file={}", p.f("munged.pid").display()))
            .arg(format!("--log-file={}", p.f("log/munged.log").display()))
            .arg(format!("--seed-file={}", p.f("munged.seed").display())),
        "munged",
    )?;
    Ok(())
}

/// `CPUs=.. RealMemory=..` of this machine as `slurmd -C` reports them.
fn node_resources() -> Result<(String, String)> {
    let text = run(Command::new("slurmd").arg("-C"), "slurmd -C")?;
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
            .with_context(|| format!("`slurmd -C` printed no {key}: {text}"))
    };
    Ok((field("CPUs=")?, field("RealMemory=")?))
}

fn write_conf(p: &Paths) -> Result<()> {
    let (cpus, mem) = node_resources()?;
    let f = |n: &str| p.f(n).display().to_string();
    // A requeued job waits cred_expire (default 120 s), then for the main scheduler's next
    // pass (default every 60 s): both shortened so the requeue test takes seconds.
    let conf = format!(
        "# Written by `cargo xtask services up slurm`: a single-node test cluster.\n\
         ClusterName=dacapo\n\
         SlurmctldHost=localhost\n\
         SlurmUser=root\n\
         SlurmdUser=root\n\
         AuthType=auth/munge\n\
         CredType=cred/munge\n\
         AuthInfo=socket={socket},cred_expire=10\n\
         StateSaveLocation={state}\n\
         SlurmdSpoolDir={spool}\n\
         SlurmctldPidFile={ctld_pid}\n\
         SlurmdPidFile={d_pid}\n\
         SlurmctldLogFile={ctld_log}\n\
         SlurmdLogFile={d_log}\n\
         SlurmctldPort=6817\n\
         SlurmdPort=6818\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         JobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_Core\n\
         SchedulerType=sched/backfill\n\
         SchedulerParameters=bf_interval=1,sched_interval=2\n\
         MpiDefault=none\n\
         ReturnToService=2\n\
         NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN\n\
         PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
        socket = f("munge.socket"),
        state = f("state"),
        spool = f("spool"),
        ctld_pid = f("slurmctld.pid"),
        d_pid = f("slurmd.pid"),
        ctld_log = f("log/slurmctld.log"),
        d_log = f("log/slurmd.log"),
    );
    std::fs::write(p.conf(), conf).with_context(|| format!("cannot write {}", p.conf().display()))
}

/// Whether `sinfo` answers and shows the node ready: idle, or running jobs.
fn node_idle(p: &Paths) -> bool {
    Command::new("sinfo")
        .args(["--noheader", "--format=%T"])
        .env("SLURM_CONF", p.conf())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            o.status.success()
                && ["idle", "mixed", "allocated", "completing"]
                    .iter()
                    .any(|s| out.lines().any(|l| l.trim() == *s))
        })
}

fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

fn pid_alive(pid_file: &Path) -> bool {
    read_pid(pid_file).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Sends SIGTERM to the daemon in `pid_file` and waits up to 10 s for it to exit.
fn stop_daemon(pid_file: &Path) {
    let Some(pid) = read_pid(pid_file) else {
        return;
    };
    let _ = Command::new("kill")
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(pid_file);
}
