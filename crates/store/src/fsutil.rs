//! Small file system helpers: fsync of directories, atomic replacement, checksumming writers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, io_err};

/// Flushes a directory's entries (new, renamed or removed names) to disk.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// A name suffix unique within this host for the life of this process.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `dir` and any missing parents; with `fsync`, makes each newly created one durable
/// by syncing its parent.
pub fn create_dir_durable(dir: &Path, fsync: bool) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dir_durable(parent, fsync)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(io_err("create directory", dir)(e)),
    }
    if fsync && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically: readers see the old or the new content, never a mix.
///
/// Writes a hidden temp file beside it and renames it over `path`; with `fsync`, the new
/// content and the rename are durable when this returns.
pub fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", unique_suffix()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        if fsync {
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        if fsync {
            fsync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole (small) file, mapping "not found" to `Ok(None)`.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// CRC32C and length of a whole file, streamed.
pub(crate) fn file_crc(path: &Path) -> Result<(u64, u32)> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            return Ok((len, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        len += n as u64;
    }
}

/// A writer that computes the CRC32C and length of everything written through it.
pub(crate) struct CrcWriter<W> {
    pub(crate) inner: W,
    pub(crate) crc: u32,
    pub(crate) len: u64,
}

impl<W: Write> CrcWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            crc: 0,
            len: 0,
        }
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.len += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that compares everything written to it with the content of an existing file,
/// for idempotent retries; it stops reading at the first difference.
pub(crate) struct CompareWriter {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Whether all bytes so far matched.
    pub(crate) equal: bool,
}

impl CompareWriter {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: File::open(path).map_err(io_err("open", path))?,
            path: path.to_path_buf(),
            buf: Vec::new(),
            equal: true,
        })
    }

    /// True if all written bytes matched and the file has nothing more.
    pub(crate) fn finish(mut self) -> Result<bool> {
        if !self.equal {
            return Ok(false);
        }
        let mut probe = [0u8; 1];
        let n = self
            .file
            .read(&mut probe)
            .map_err(io_err("read", &self.path))?;
        Ok(n == 0)
    }
}

impl Write for CompareWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        const CHUNK: usize = 1 << 20;
        while self.equal && !data.is_empty() {
            let n = data.len().min(CHUNK);
            self.buf.resize(n, 0);
            match self.file.read_exact(&mut self.buf[..n]) {
                Ok(()) => self.equal = self.buf[..n] == data[..n],
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.equal = false,
                Err(e) => return Err(e),
            }
            data = &data[n..];
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The fsync of a file, run by a helper thread once the file is complete.
///
/// Started when the file is created and released by [`Self::close`] when its last byte is
/// written, so the disk flushes one file while the next one is being written and checksummed.
pub(crate) struct SyncBehind {
    tx: Option<std::sync::mpsc::Sender<()>>,
    handle: std::thread::JoinHandle<io::Result<()>>,
    path: PathBuf,
}

impl SyncBehind {
    /// Starts the helper thread for `file`; it waits for [`Self::close`].
    pub(crate) fn start(file: &File, path: &Path) -> Result<Self> {
        let f = file
            .try_clone()
            .map_err(io_err("duplicate handle of", path))?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("dacapo-store-fsync".into())
            .spawn(move || {
                // Returns when the sender is dropped: the file is complete.
                while rx.recv().is_ok() {}
                f.sync_all()
            })
            .map_err(io_err("start an fsync thread for", path))?;
        Ok(Self {
            tx: Some(tx),
            handle,
            path: path.to_path_buf(),
        })
    }

    /// Lets the thread fsync the file now, without waiting for it.
    pub(crate) fn close(&mut self) {
        self.tx = None;
    }

    /// Waits for the fsync.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.close();
        match self.handle.join() {
            Ok(r) => r.map_err(io_err("fsync", &self.path)),
            Err(_) => Err(crate::error::StoreError::Invalid(format!(
                "the fsync thread of {} panicked",
                self.path.display()
            ))),
        }
    }
}
