//! The JSON-lines record format of the stats files, and exact JSON reading.
//!
//! Floats must read back bit for bit (the stats store compares stored and in-memory records),
//! so the workspace enables serde_json's `float_roundtrip`. Training stats lines, the bulk of
//! what is read, have a fast path for the exact form this module writes.

use std::fmt::Write as _;

use dacapo_core::TrainingIterationStats;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses `text` as one JSON value and decodes it as `T`.
pub(crate) fn from_str_exact<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Appends `v` as JSON: shortest round-trip decimal, NaN as `null`, infinities as
/// `"Infinity"`/`"-Infinity"` (the convention of `dacapo_core::Score`).
pub(crate) fn write_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("null");
    } else if v == f64::INFINITY {
        out.push_str("\"Infinity\"");
    } else if v == f64::NEG_INFINITY {
        out.push_str("\"-Infinity\"");
    } else {
        // `{:?}` prints the shortest decimal that reads back exactly, always with a '.' or an
        // exponent, so it is a valid JSON number.
        let _ = write!(out, "{v:?}");
    }
}

/// Appends one training stats record as a JSON line (with the trailing `\n`).
pub(crate) fn write_training_line(out: &mut String, r: &TrainingIterationStats) {
    let _ = write!(out, "{{\"iteration\":{},\"loss\":", r.iteration);
    write_f64(out, r.loss);
    out.push_str(",\"time\":");
    write_f64(out, r.time);
    out.push_str("}\n");
}

/// Parses one training stats line (without its `\n`), written by us or by any JSON writer.
pub(crate) fn parse_training_line(line: &[u8]) -> Result<TrainingIterationStats, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    training_from_value(value)
}

fn training_from_value(value: Value) -> Result<TrainingIterationStats, String> {
    let Value::Object(map) = value else {
        return Err("expected a JSON object".to_owned());
    };
    let mut it = None;
    let mut loss = None;
    let mut time = None;
    for (k, v) in map {
        let scalar_f64 = |v: &Value| -> Result<f64, String> {
            match v {
                Value::Number(n) => n.as_f64().ok_or_else(|| "invalid number".to_owned()),
                Value::Null => Ok(f64::NAN),
                Value::String(s) => special_float(s),
                _ => Err(format!("`{k}` must be a number")),
            }
        };
        match k.as_str() {
            "iteration" => {
                it = Some(
                    v.as_u64()
                        .ok_or_else(|| "`iteration` must be a non-negative integer".to_owned())?,
                )
            }
            "loss" => loss = Some(scalar_f64(&v)?),
            "time" => time = Some(scalar_f64(&v)?),
            other => return Err(format!("unknown field `{other}`")),
        }
    }
    build_training(it, loss, time)
}

fn build_training(
    it: Option<u64>,
    loss: Option<f64>,
    time: Option<f64>,
) -> Result<TrainingIterationStats, String> {
    Ok(TrainingIterationStats {
        iteration: it.ok_or("missing field `iteration`")?,
        loss: loss.ok_or("missing field `loss`")?,
        time: time.ok_or("missing field `time`")?,
    })
}

fn special_float(s: &str) -> Result<f64, String> {
    match s {
        "Infinity" | "inf" => Ok(f64::INFINITY),
        "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        other => Err(format!(
            "expected a number, null or \"Infinity\", found {other:?}"
        )),
    }
}

/// Parses a line exactly as [`write_training_line`] writes it, at the start of `bytes`, and
/// returns the record and the length of the line including its `\n`.
///
/// `None` for anything else (other key order, whitespace, a missing `\n`): the caller then
/// falls back to [`parse_training_line`]. This is the hot path of reading 100k-record files.
pub(crate) fn parse_training_canonical(bytes: &[u8]) -> Option<(TrainingIterationStats, usize)> {
    let rest = bytes.strip_prefix(b"{\"iteration\":")?;
    let end = rest.iter().position(|c| !c.is_ascii_digit())?;
    let digits = &rest[..end];
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let iteration: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let rest = rest[end..].strip_prefix(b",\"loss\":")?;
    let (loss, rest) = take_f64(rest)?;
    let rest = rest.strip_prefix(b",\"time\":")?;
    let (time, rest) = take_f64(rest)?;
    let rest = rest.strip_prefix(b"}\n")?;
    Some((
        TrainingIterationStats {
            iteration,
            loss,
            time,
        },
        bytes.len() - rest.len(),
    ))
}

/// A JSON number (strictly shaped), `null` (NaN) or `"Infinity"`/`"-Infinity"` at the start
/// of `b`, and the rest.
fn take_f64(b: &[u8]) -> Option<(f64, &[u8])> {
    if let Some(rest) = b.strip_prefix(b"null") {
        return Some((f64::NAN, rest));
    }
    if let Some(rest) = b.strip_prefix(b"\"Infinity\"") {
        return Some((f64::INFINITY, rest));
    }
    if let Some(rest) = b.strip_prefix(b"\"-Infinity\"") {
        return Some((f64::NEG_INFINITY, rest));
    }
    let end = b
        .iter()
        .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(b.len());
    let tok = &b[..end];
    let unsigned = tok.strip_prefix(b"-").unwrap_or(tok);
    // What `str::parse` accepts but JSON does not: "+1", ".5", "01", "1.", "1.e5".
    match unsigned {
        [b'0', b'0'..=b'9', ..] => return None,
        [b'0'..=b'9', ..] => {}
        _ => return None,
    }
    if !tok.last()?.is_ascii_digit()
        || tok
            .windows(2)
            .any(|w| w[0] == b'.' && !w[1].is_ascii_digit())
    {
        return None;
    }
    let v: f64 = std::str::from_utf8(tok).ok()?.parse().ok()?;
    Some((v, &b[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_back_exactly() {
        // 17-significant-digit values where a naive significand * 10^exp parse is off.
        let samples = [
            0.1,
            1.0 / 3.0,
            2.0f64.sqrt(),
            9007199254740993.0,
            1.7976931348623157e308,
            5e-324,
            -0.0,
            123456.78901234567,
            0.30000000000000004,
        ];
        for v in samples {
            let mut s = String::new();
            write_f64(&mut s, v);
            let back: f64 = from_str_exact(&s).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{s}");
        }
    }

    #[test]
    fn training_lines_round_trip_including_non_finite() {
        for (loss, time) in [
            (0.5, 0.25),
            (f64::NAN, 1e-9),
            (f64::INFINITY, f64::NEG_INFINITY),
        ] {
            let r = TrainingIterationStats {
                iteration: 42,
                loss,
                time,
            };
            let mut s = String::new();
            write_training_line(&mut s, &r);
            assert!(s.ends_with('\n'));
            let back = parse_training_line(s.trim_end().as_bytes()).unwrap();
            assert_eq!(back.iteration, 42);
            assert!(back.loss.to_bits() == loss.to_bits() || (back.loss.is_nan() && loss.is_nan()));
            assert_eq!(back.time.to_bits(), time.to_bits());
        }
    }

    #[test]
    fn canonical_fast_path_matches_the_general_parser() {
        let mut text = String::new();
        for (i, (loss, time)) in [(0.5, 1e-7), (f64::NAN, 1e300), (-0.0, f64::INFINITY)]
            .into_iter()
            .enumerate()
        {
            write_training_line(
                &mut text,
                &TrainingIterationStats {
                    iteration: i as u64 * 1000,
                    loss,
                    time,
                },
            );
        }
        let bytes = text.as_bytes();
        let mut at = 0;
        for line in text.lines() {
            let (fast, used) = parse_training_canonical(&bytes[at..]).unwrap();
            let slow = parse_training_line(line.as_bytes()).unwrap();
            assert_eq!(fast.iteration, slow.iteration);
            assert_eq!(fast.loss.to_bits(), slow.loss.to_bits());
            assert_eq!(fast.time.to_bits(), slow.time.to_bits());
            assert_eq!(used, line.len() + 1);
            at += used;
        }
        // Not canonical: handled (or rejected) by the general parser instead.
        for other in [
            &b"{\"iteration\":1,\"loss\":1.0,\"time\":1.0}"[..], // no newline: torn
            b"{\"iteration\":01,\"loss\":1.0,\"time\":1.0}\n",
            b"{\"iteration\":1,\"loss\":+1.0,\"time\":1.0}\n",
            b"{\"iteration\":1,\"loss\":.5,\"time\":1.0}\n",
            b"{\"iteration\":1,\"loss\":1.,\"time\":1.0}\n",
            b"{\"iteration\":1,\"loss\":1.e5,\"time\":1.0}\n",
            b"{\"iteration\":1, \"loss\":1.0,\"time\":1.0}\n",
            b"{\"loss\":1.0,\"iteration\":1,\"time\":1.0}\n",
        ] {
            assert!(
                parse_training_canonical(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn training_lines_from_other_writers_and_errors() {
        let r = parse_training_line(br#" { "time" : 2 , "loss":1.5e0,"iteration":7 } "#).unwrap();
        assert_eq!((r.iteration, r.loss, r.time), (7, 1.5, 2.0));
        // An escaped key goes through the general parser.
        let r = parse_training_line(br#"{"iter\u0061tion":1,"loss":null,"time":0.5}"#).unwrap();
        assert_eq!(r.iteration, 1);
        assert!(r.loss.is_nan());
        for bad in [
            &br#"{"iteration":1,"loss":1}"#[..],
            br#"{"iteration":-1,"loss":1,"time":1}"#,
            br#"{"iteration":1.5,"loss":1,"time":1}"#,
            br#"{"iteration":1,"loss":1,"time":1,"x":2}"#,
            br#"{"iteration":1,"loss":"abc","time":1}"#,
            br#"{"iteration":1,"loss":1,"time":1}x"#,
            br#"{"iteration":1,"loss":01,"time":1}"#,
            b"{\"iteration\":1,\"lo",
            b"",
        ] {
            assert!(
                parse_training_line(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
