//! [`EventWriter`]: one event file, appended to by one process.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::{Result, TensorboardError};
use crate::proto::{Event, summary};
use crate::record::{event_files, frame};

/// Encoded records are handed to the file once this many bytes are queued.
const BUFFER: usize = 1 << 20;

/// Files this process has opened, the last part of their names (as TensorFlow numbers them).
static FILES_OPENED: AtomicU64 = AtomicU64::new(0);

/// Seconds since the Unix epoch, now.
pub fn wall_time_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A new event file, written record by record; [`flush`](Self::flush) hands the queued
/// records to the file whole, [`sync`](Self::sync) also makes them durable.
pub struct EventWriter {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, named
    /// `events.out.tfevents.<secs>.<host>.<pid>.<n>`, whose first record is the file version.
    ///
    /// TensorBoard reads a directory's files in name order, so `<secs>` is kept past the
    /// newest file already there: a process restarted within the same second still sorts last.
    pub fn create(dir: &Path, host: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| TensorboardError::Io {
            path: dir.to_owned(),
            action: "create the directory",
            source,
        })?;
        let now = wall_time_now();
        let secs = (now as u64).max(newest_secs(dir)?.map_or(0, |s| s + 1));
        let n = FILES_OPENED.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "events.out.tfevents.{secs:010}.{}.{}.{n}",
            file_name_part(host),
            std::process::id()
        );
        let path = dir.join(name);
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| TensorboardError::Io {
                path: path.clone(),
                action: "create",
                source,
            })?;
        let mut writer = Self {
            path,
            file,
            buf: Vec::new(),
        };
        writer.write(&Event::file_version(now))?;
        writer.flush()?;
        Ok(writer)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one event.
    pub fn write(&mut self, event: &Event) -> Result<()> {
        frame(&event.encode_to_vec(), &mut self.buf);
        if self.buf.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues scalars of `step`, as one event.
    pub fn scalars(&mut self, step: i64, wall_time: f64, values: &[(&str, f32)]) -> Result<()> {
        let values = values
            .iter()
            .map(|&(tag, v)| summary::Value::scalar(tag, v))
            .collect();
        self.write(&Event::summary(wall_time, step, values))
    }

    /// Queues an encoded image of `step` under `tag`.
    pub fn image(
        &mut self,
        step: i64,
        wall_time: f64,
        tag: &str,
        image: summary::Image,
    ) -> Result<()> {
        let value = summary::Value {
            tag: tag.to_owned(),
            kind: Some(summary::value::Kind::Image(image)),
        };
        self.write(&Event::summary(wall_time, step, vec![value]))
    }

    /// Queues the marker of a session (re)starting at `step` from `checkpoint`: TensorBoard
    /// forgets what it loaded for steps `>= step`, so steps written again show once.
    pub fn session_start(&mut self, step: i64, wall_time: f64, checkpoint: &str) -> Result<()> {
        self.write(&Event::session_start(
            wall_time,
            step,
            checkpoint.to_owned(),
        ))
    }

    /// Hands the queued records to the file, whole records in one write.
    pub fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.buf);
        self.buf.clear();
        result.map_err(|source| TensorboardError::Io {
            path: self.path.clone(),
            action: "write",
            source,
        })
    }

    /// Flushes, then waits until the file's data is on disk.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|source| TensorboardError::Io {
                path: self.path.clone(),
                action: "sync",
                source,
            })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // Nothing to report to from here; `flush`/`sync` are the calls that report errors.
        let _ = self.flush();
    }
}

/// The `<secs>` of the newest event file named like ours in `dir`.
fn newest_secs(dir: &Path) -> Result<Option<u64>> {
    Ok(event_files(dir)?
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .strip_prefix("events.out.tfevents.")
        })
        .filter_map(|rest| rest.split('.').next()?.parse::<u64>().ok())
        .max())
}

/// `host` with anything that cannot be part of a file name replaced by `_`.
fn file_name_part(host: &str) -> String {
    let cleaned: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown-host".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::proto::{FILE_VERSION, SessionStatus, event};
    use crate::record::read_events;

    #[test]
    fn writes_version_scalars_images_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path(), "node 1.example").unwrap();
        let name = w.path().file_name().unwrap().to_str().unwrap().to_owned();
        let parts: Vec<&str> = name.split('.').collect();
        assert_eq!(parts[..3], ["events", "out", "tfevents"]);
        assert_eq!(parts[4], "node_1_example");
        assert_eq!(parts[5], std::process::id().to_string());
        w.scalars(
            3,
            10.0,
            &[("train/loss", 0.5), ("train/learning_rate", 1e-4)],
        )
        .unwrap();
        let png = summary::Image {
            height: 2,
            width: 3,
            colorspace: 1,
            encoded_image_string: vec![1, 2, 3],
        };
        w.image(4, 11.0, "snapshot/val", png.clone()).unwrap();
        w.session_start(2, 12.0, "checkpoint 2").unwrap();
        w.sync().unwrap();

        let events = read_events(w.path()).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0].what,
            Some(event::What::FileVersion(FILE_VERSION.into()))
        );
        assert_eq!(events[1].step, 3);
        assert_eq!(events[1].values()[0].tag, "train/loss");
        assert_eq!(events[1].values()[1].as_scalar(), Some(1e-4));
        assert_eq!(
            events[2].values()[0].kind,
            Some(summary::value::Kind::Image(png))
        );
        let Some(event::What::SessionLog(log)) = &events[3].what else {
            panic!("{:?}", events[3]);
        };
        assert_eq!((events[3].step, log.status()), (2, SessionStatus::Start));
    }

    #[test]
    fn nothing_reaches_the_file_before_a_flush_and_drop_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path(), "h").unwrap();
        let path = w.path().to_owned();
        w.scalars(0, 0.0, &[("a", 1.0)]).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 1);
        drop(w);
        assert_eq!(read_events(&path).unwrap().len(), 2);
    }

    #[test]
    fn a_later_file_sorts_after_the_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        // A file from "the future" (another machine's clock, or the same second).
        let future = dir.path().join("events.out.tfevents.5000000000.h.1.0");
        std::fs::write(&future, b"").unwrap();
        let w = EventWriter::create(dir.path(), "h").unwrap();
        let w2 = EventWriter::create(dir.path(), "h").unwrap();
        let files = event_files(dir.path()).unwrap();
        assert_eq!(files, [future, w.path().to_owned(), w2.path().to_owned()]);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = EventWriter::create(&file.join("logs"), "h").err().unwrap();
        assert!(err.to_string().contains("logs"), "{err}");
    }
}
