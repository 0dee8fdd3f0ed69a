//! dacapo-tensorboard: TensorBoard event files, written and read back.
//!
//! An event file is a sequence of TFRecords (length, masked CRC-32C of the length, data,
//! masked CRC-32C of the data), each holding one protobuf `Event`. [`EventWriter`] makes
//! files the way TensorFlow's writer does (`events.out.tfevents.<secs>.<host>.<pid>.<n>`,
//! first record `file_version = "brain.Event:2"`) with scalar and image summaries and the
//! `SessionLog` START marker that makes TensorBoard drop steps a resumed run writes again.
//! [`read_events`] reads a file back, checking every checksum. No maintained crate writes
//! this format, so the few messages needed are declared here with `prost`'s derive macros.

pub mod error;
pub mod proto;
pub mod record;
#[cfg(feature = "testing")]
pub mod testing;
pub mod writer;

pub use error::TensorboardError;
pub use proto::{Event, SessionLog, SessionStatus, Summary, summary};
pub use record::{event_files, read_events};
pub use writer::{EventWriter, wall_time_now};
