//! The postgres service of `cargo xtask services`: a throwaway PostgreSQL cluster in
//! `<dir>/postgres` (trust authentication, loopback only, port 54329) with a database
//! `dacapo_test`, started with the server's own `initdb`/`pg_ctl`.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the OS user
//! `postgres` (created when missing) and every server command runs as that user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

use super::CannotInstall;

/// The TCP port of the test cluster (not the default 5432, so it never meets a system one).
const PORT: u16 = 54329;
/// The database the tests use.
const DATABASE: &str = "dacapo_test";
/// The OS user (and database superuser) that owns the cluster when xtask runs as root.
const SERVICE_USER: &str = "postgres";

/// Starts postgres under `dir` (or finds it running); returns the variables its tests read.
pub fn up(dir: &Path) -> Result<Vec<(String, String)>> {
    let bin = match find_bin_dir() {
        Some(bin) => bin,
        None => install()?,
    };
    let owner = Owner::detect()?;
    let base = dir.join("postgres");
    let data = base.join("data");
    let sockets = base.join("run");
    std::fs::create_dir_all(&sockets)
        .with_context(|| format!("cannot create {}", sockets.display()))?;
    owner.take(&base)?;
    if !owner
        .run(
            &bin.join("pg_ctl"),
            &base,
            &["status", "-D", &path_arg(&data)?],
        )?
        .status
        .success()
    {
        if !data.join("PG_VERSION").is_file() {
            // A half-made data dir (an interrupted initdb) cannot be reused.
            if data.exists() {
                std::fs::remove_dir_all(&data)
                    .with_context(|| format!("cannot remove {}", data.display()))?;
            }
            let out = owner.run(
                &bin.join("initdb"),
                &base,
                &[
                    "-D",
                    &path_arg(&data)?,
                    "-U",
                    &owner.name,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
            )?;
            check(&out, "initdb")?;
            let conf = format!(
                "\n# cargo xtask services: loopback only, on its own port and socket dir.\n\
                 listen_addresses = '127.0.0.1'\nport = {PORT}\n\
                 unix_socket_directories = '{}'\nmax_connections = 200\n",
                path_arg(&sockets)?.replace('\'', "''")
            );
            append(&data.join("postgresql.conf"), &conf)?;
        }
        let log = base.join("server.log");
        let out = owner.run(
            &bin.join("pg_ctl"),
            &base,
            &[
                "start",
                "-D",
                &path_arg(&data)?,
                "-l",
                &path_arg(&log)?,
                "-w",
                "-t",
                "60",
            ],
        )?;
        if !out.status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            bail!(
                "pg_ctl start failed ({}): {}\nlast lines of {}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    ensure_database(&bin, &owner.name, &base)?;
    Ok(vec![(
        "DACAPO_TEST_POSTGRES_URL".to_owned(),
        format!("postgres://{}@127.0.0.1:{PORT}/{DATABASE}", owner.name),
    )])
}

/// Stops postgres and removes its state under `dir`.
pub fn down(dir: &Path) -> Result<()> {
    let base = dir.join("postgres");
    let data = base.join("data");
    if data.join("PG_VERSION").is_file()
        && let Some(bin) = find_bin_dir()
    {
        let owner = Owner::detect()?;
        let out = owner.run(
            &bin.join("pg_ctl"),
            &base,
            &["stop", "-D", &path_arg(&data)?, "-m", "fast", "-w"],
        )?;
        // Not running is fine; anything else would leave a server on a deleted data dir.
        if !out.status.success()
            && !String::from_utf8_lossy(&out.stderr).contains("Is server running?")
        {
            bail!(
                "pg_ctl stop failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    if base.exists() {
        std::fs::remove_dir_all(&base)
            .with_context(|| format!("cannot remove {}", base.display()))?;
    }
    Ok(())
}

/// The directory holding `initdb`, `pg_ctl` and `psql`: `/usr/local/bin`, the newest
/// `/usr/lib/postgresql/*/bin`, or `PATH`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut candidates = vec![PathBuf::from("/usr/local/bin")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versioned: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versioned.sort();
        candidates.extend(versioned.into_iter().rev().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|d| has_all(d))
}

/// Installs Debian's `postgresql` package (root only) and returns its bin dir.
fn install() -> Result<PathBuf> {
    if !is_root()? {
        return Err(CannotInstall(
            "initdb/pg_ctl not found (looked in /usr/local/bin, /usr/lib/postgresql/*/bin and \
             PATH) and not root, so cannot apt-get install postgresql; install it and retry"
                .into(),
        )
        .into());
    }
    eprintln!("xtask: initdb not found; installing the postgresql package with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let install = ["install", "-y", "--no-install-recommends", "postgresql"];
    let installed = apt(&install) || (apt(&["update"]) && apt(&install));
    if !installed {
        return Err(CannotInstall(
            "initdb/pg_ctl not found and `apt-get install -y postgresql` failed".into(),
        )
        .into());
    }
    find_bin_dir().context("apt-get installed postgresql but initdb/pg_ctl/psql are not found")
}

fn is_root() -> Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("cannot run `id -u`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The OS user the server runs as; as root, server commands run as [`SERVICE_USER`].
struct Owner {
    name: String,
    switch: bool,
}

impl Owner {
    fn detect() -> Result<Self> {
        if !is_root()? {
            let out = Command::new("id")
                .arg("-un")
                .output()
                .context("cannot run `id -un`")?;
            let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if name.is_empty() {
                bail!("cannot tell the current user name (`id -un` printed nothing)");
            }
            return Ok(Self {
                name,
                switch: false,
            });
        }
        let exists = Command::new("id")
            .arg(SERVICE_USER)
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            let out = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home", "--shell"])
                .args(["/bin/sh", SERVICE_USER])
                .output()
                .context("cannot run useradd")?;
            check(&out, "useradd postgres (PostgreSQL refuses to run as root)")?;
        }
        Ok(Self {
            name: SERVICE_USER.to_owned(),
            switch: true,
        })
    }

    /// Gives `dir` (recursively) to the owner and checks that the owner can reach it.
    fn take(&self, dir: &Path) -> Result<()> {
        if !self.switch {
            return Ok(());
        }
        let out = Command::new("chown")
            .args(["-R", &format!("{0}:", self.name)])
            .arg(dir)
            .output()
            .context("cannot run chown")?;
        check(&out, "chown of the postgres state dir")?;
        let out = self.run(Path::new("test"), dir, &["-w", &path_arg(dir)?])?;
        if !out.status.success() {
            bail!(
                "user `{}` cannot write {} (a parent directory is private?); set \
                 DACAPO_SERVICES_DIR to a directory under /tmp",
                self.name,
                dir.display()
            );
        }
        Ok(())
    }

    /// Runs `program args` as the owner, in `cwd` (which the owner can enter).
    fn run(&self, program: &Path, cwd: &Path, args: &[&str]) -> Result<Output> {
        let mut cmd = if !self.switch {
            Command::new(program)
        } else if Path::new("/usr/sbin/runuser").is_file() || Path::new("/sbin/runuser").is_file() {
            let mut c = Command::new("runuser");
            c.args(["-u", &self.name, "--"]).arg(program);
            c
        } else {
            // su passes the words after the command to the shell as $0, $1, ...
            let mut c = Command::new("su");
            c.args(["-s", "/bin/sh", &self.name, "-c", "exec \"$0\" \"$@\""])
                .arg(program);
            c
        };
        cmd.args(args)
            .current_dir(cwd)
            .output()
            .with_context(|| format!("cannot run {}", program.display()))
    }
}

/// Creates the test database unless it exists.
fn ensure_database(bin: &Path, user: &str, cwd: &Path) -> Result<()> {
    let psql = |sql: &str| {
        Command::new(bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &PORT.to_string(), "-U", user, "-d"])
            .args(["postgres", "-c", sql])
            .current_dir(cwd)
            .output()
            .context("cannot run psql")
    };
    let out = psql(&format!(
        "SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
    ))?;
    check(&out, "psql (is the server up?)")?;
    if String::from_utf8_lossy(&out.stdout).trim() != "1" {
        check(
            &psql(&format!("CREATE DATABASE {DATABASE}"))?,
            "CREATE DATABASE",
        )?;
    }
    Ok(())
}

fn check(out: &Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot append to {}", path.display()))
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
