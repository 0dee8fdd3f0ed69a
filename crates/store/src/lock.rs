//! [`RunLock`]: one writer per run, across processes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dacapo_core::RunName;

use crate::error::{Result, StoreError, io_err};
use crate::fsutil::create_dir_durable;
use crate::layout;

/// An exclusive advisory lock on `<root>/<run>/.lock`, held until dropped.
///
/// Uses the operating system's file lock (`File::try_lock`), so it is released when the
/// holder exits in any way, SIGKILL included; a stale lock file never blocks. The holder's
/// pid, host and start time are written into the file so a refused writer can name it.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run` under `root` without waiting; `StoreError::Locked` naming the
    /// holder if another writer (in this or another process) has it.
    pub fn acquire(root: impl AsRef<Path>, run: &RunName) -> Result<RunLock> {
        let dir = layout::run_dir(root.as_ref(), run);
        create_dir_durable(&dir, true)?;
        let path = layout::lock_path(root.as_ref(), run);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::Locked {
                    path,
                    holder: if holder.is_empty() {
                        "a writer that has not recorded itself yet".to_owned()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let info = format!(
            "pid {} on host {} since unix time {started}\n",
            std::process::id(),
            hostname()
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(info.as_bytes()))
            .map_err(io_err("write lock file", &path))?;
        Ok(RunLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who holds the lock of `run` under `root` now (`None`: nobody, or no lock file yet).
    ///
    /// A non-blocking probe for readers such as `dacapo runs ls`: it takes a shared lock on
    /// the file for an instant (never creating, truncating or writing it) and releases it at
    /// once; a writer calling [`acquire`](Self::acquire) in that instant is refused.
    pub fn holder(root: impl AsRef<Path>, run: &RunName) -> Result<Option<String>> {
        let path = layout::lock_path(root.as_ref(), run);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open lock file", &path)(e)),
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                Ok(None)
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                Ok(Some(if holder.is_empty() {
                    "a writer that has not recorded itself yet".to_owned()
                } else {
                    holder.to_owned()
                }))
            }
            Err(fs::TryLockError::Error(e)) => Err(io_err("probe lock", &path)(e)),
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Clear the holder record while still holding the lock; closing the file releases it.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// This machine's host name, or `unknown-host`.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn holder_names_the_writer_only_while_it_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let r = &RunName::new("r").unwrap();
        assert_eq!(RunLock::holder(dir.path(), r).unwrap(), None);
        let lock = RunLock::acquire(dir.path(), r).unwrap();
        let holder = RunLock::holder(dir.path(), r).unwrap().unwrap();
        assert!(
            holder.starts_with(&format!("pid {} on host ", std::process::id())),
            "{holder}"
        );
        // The probe neither took the lock away nor changed the holder record.
        assert!(matches!(
            RunLock::acquire(dir.path(), r),
            Err(StoreError::Locked { .. })
        ));
        assert_eq!(RunLock::holder(dir.path(), r).unwrap().unwrap(), holder);
        drop(lock);
        assert_eq!(RunLock::holder(dir.path(), r).unwrap(), None);
    }
}
