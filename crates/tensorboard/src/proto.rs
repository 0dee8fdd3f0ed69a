//! The protobuf messages of an event file that dacapo-rs writes: a subset of TensorBoard's
//! `event.proto` and `summary.proto` with the same field numbers, so any TensorBoard reader
//! decodes them (fields left out here are skipped by readers as unknown or absent).

/// One record of an event file (`tensorflow.Event`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch when the event happened.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The training step the event belongs to (TensorBoard's x axis).
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event holds.
    #[prost(oneof = "event::What", tags = "3, 5, 7")]
    pub what: Option<event::What>,
}

/// The payloads of an [`Event`].
pub mod event {
    /// What an [`Event`](super::Event) holds (`Event.what`).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// The format version, first record of every file (`"brain.Event:2"`).
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// Tagged values of one step.
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        /// A change of the writing session's state (a restart).
        #[prost(message, tag = "7")]
        SessionLog(super::SessionLog),
    }
}

/// Tagged values of one step (`tensorflow.Summary`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values, one per tag.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

/// The parts of a [`Summary`].
pub mod summary {
    /// One tagged value (`Summary.Value`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The series the value belongs to, e.g. `train/loss`.
        #[prost(string, tag = "1")]
        pub tag: String,
        /// The value.
        #[prost(oneof = "value::Kind", tags = "2, 4")]
        pub kind: Option<value::Kind>,
    }

    /// The kinds of a [`Value`].
    pub mod value {
        /// What a [`Value`](super::Value) holds (`Summary.Value.value`).
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Kind {
            /// A scalar (TensorBoard's scalars dashboard).
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            /// An encoded image (TensorBoard's images dashboard).
            #[prost(message, tag = "4")]
            Image(super::Image),
        }
    }

    /// An encoded image (`Summary.Image`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        /// Height in pixels.
        #[prost(int32, tag = "1")]
        pub height: i32,
        /// Width in pixels.
        #[prost(int32, tag = "2")]
        pub width: i32,
        /// 1 grayscale, 2 grayscale + alpha, 3 RGB, 4 RGBA.
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        /// The PNG (or JPEG) file's bytes.
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }
}

/// A change of the writing session's state (`tensorflow.SessionLog`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// A [`SessionStatus`] as its number.
    #[prost(enumeration = "SessionStatus", tag = "1")]
    pub status: i32,
    /// The checkpoint the session (re)started from, if any.
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    /// A free-form message.
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// The states of a [`SessionLog`] (`SessionLog.SessionStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SessionStatus {
    /// Not set.
    StatusUnspecified = 0,
    /// A session (re)started at the event's step: readers drop what they loaded for steps at
    /// or after it.
    Start = 1,
    /// A session stopped.
    Stop = 2,
    /// A checkpoint was written.
    Checkpoint = 3,
}

/// The `file_version` of files this crate writes; version 2 tells TensorBoard to honour
/// `SessionLog` START events.
pub const FILE_VERSION: &str = "brain.Event:2";

impl Event {
    /// The first record of a file: its format version.
    pub fn file_version(wall_time: f64) -> Self {
        Self {
            wall_time,
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_owned())),
        }
    }

    /// Values of `step`.
    pub fn summary(wall_time: f64, step: i64, value: Vec<summary::Value>) -> Self {
        Self {
            wall_time,
            step,
            what: Some(event::What::Summary(Summary { value })),
        }
    }

    /// A session (re)starting at `step`: readers forget what they loaded for steps `>= step`.
    pub fn session_start(wall_time: f64, step: i64, checkpoint_path: String) -> Self {
        Self {
            wall_time,
            step,
            what: Some(event::What::SessionLog(SessionLog {
                status: SessionStatus::Start.into(),
                checkpoint_path,
                msg: String::new(),
            })),
        }
    }

    /// The summary values of this event (empty for other kinds).
    pub fn values(&self) -> &[summary::Value] {
        match &self.what {
            Some(event::What::Summary(s)) => &s.value,
            _ => &[],
        }
    }
}

impl summary::Image {
    /// A PNG file's bytes with the size and colour space its header gives; `None` if `png`
    /// does not start like a PNG file.
    pub fn from_png(png: Vec<u8>) -> Option<Self> {
        // Signature, then the IHDR chunk: length, "IHDR", width, height, depth, colour type.
        if png.len() < 26 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
            return None;
        }
        let be = |at: usize| i32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
        let colorspace = match png[25] {
            0 => 1,
            4 => 2,
            2 | 3 => 3,
            6 => 4,
            _ => return None,
        };
        Some(Self {
            width: be(16),
            height: be(20),
            colorspace,
            encoded_image_string: png,
        })
    }
}

impl summary::Value {
    /// A scalar value.
    pub fn scalar(tag: impl Into<String>, value: f32) -> Self {
        Self {
            tag: tag.into(),
            kind: Some(summary::value::Kind::SimpleValue(value)),
        }
    }

    /// The scalar this value holds, if it is one.
    pub fn as_scalar(&self) -> Option<f32> {
        match self.kind {
            Some(summary::value::Kind::SimpleValue(v)) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use prost::Message;

    #[test]
    fn file_version_encodes_as_tensorflow_does() {
        // Field 3 (string) = 0x1a, then the length: the bytes of a real TensorFlow record.
        let event = Event {
            wall_time: 0.0,
            step: 0,
            what: Some(event::What::FileVersion("CRC test, one two".into())),
        };
        assert_eq!(event.encode_to_vec(), b"\x1a\x11CRC test, one two");
    }

    #[test]
    fn field_numbers_match_event_proto() {
        let start = Event::session_start(1.5, 7, String::new()).encode_to_vec();
        // wall_time: field 1, 64-bit (0x09); step: field 2, varint (0x10); session_log:
        // field 7, length-delimited (0x3a) holding status field 1 = START (0x08 0x01).
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.5f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 7, 0x3a, 2, 0x08, 1]);
        assert_eq!(start, expected);

        let scalar = Event::summary(0.0, 0, vec![summary::Value::scalar("a", 2.0)]);
        // summary: field 5 (0x2a) > value: field 1 (0x0a) > tag field 1 (0x0a), simple_value
        // field 2, 32-bit (0x15).
        let mut expected = vec![0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15];
        expected.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(scalar.encode_to_vec(), expected);

        let image = summary::Value {
            tag: String::new(),
            kind: Some(summary::value::Kind::Image(summary::Image {
                height: 1,
                width: 2,
                colorspace: 3,
                encoded_image_string: vec![9],
            })),
        };
        // image: field 4 (0x22) holding fields 1..4.
        assert_eq!(
            image.encode_to_vec(),
            [0x22, 9, 0x08, 1, 0x10, 2, 0x18, 3, 0x22, 1, 9]
        );
    }

    #[test]
    fn png_headers_give_the_image_size() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&300u32.to_be_bytes());
        png.extend_from_slice(&20u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0]);
        let image = summary::Image::from_png(png.clone()).unwrap();
        assert_eq!((image.width, image.height, image.colorspace), (300, 20, 3));
        assert_eq!(image.encoded_image_string, png);
        assert!(summary::Image::from_png(b"GIF89a".to_vec()).is_none());
    }

    #[test]
    fn events_round_trip() {
        let event = Event::summary(
            12.25,
            40,
            vec![
                summary::Value::scalar("train/loss", 0.125),
                summary::Value::scalar("train/learning_rate", 1e-4),
            ],
        );
        let back = Event::decode(event.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.values()[0].as_scalar(), Some(0.125));
    }
}
