//! Exact JSON reading and the JSON-lines record format of the stats files.
//!
//! serde_json without its `float_roundtrip` feature may read a 17-digit float one ULP off,
//! which would break exact round trips and the stats store's prefix comparison. Enabling that
//! feature here would change serde_json (and everything built on it, burn included) for the
//! whole workspace, so this module parses JSON itself with `str::parse::<f64>` (correctly
//! rounded) and hands a `serde_json::Value` to serde for typed decoding.

use std::fmt::Write as _;

use dacapo_core::TrainingIterationStats;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted (stats files are at most four levels deep).
const MAX_DEPTH: usize = 64;

/// Parses `text` as one JSON value with exactly rounded floats and decodes it as `T`.
pub(crate) fn from_str_exact<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let value = parse_value(text)?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Parses `text` as one JSON value (surrounding whitespace allowed) with exactly rounded floats.
pub(crate) fn parse_value(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", b as char)))
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("JSON nested too deeply"));
        }
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut map = Map::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Value::Object(map));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    let v = self.value(depth + 1)?;
                    map.insert(key, v);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Object(map));
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal("true").map(|()| Value::Bool(true)),
            Some(b'f') => self.literal("false").map(|()| Value::Bool(false)),
            Some(b'n') => self.literal("null").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => {
                let tok = self.number_token()?;
                number(tok).map(Value::Number).map_err(|e| self.err(&e))
            }
            _ => Err(self.err("expected a JSON value")),
        }
    }

    /// Scans a JSON number token strictly and returns its text.
    fn number_token(&mut self) -> Result<&'a str, String> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let d0 = p.i;
            while let Some(b'0'..=b'9') = p.peek() {
                p.i += 1;
            }
            p.i > d0
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        if self.peek() == Some(b'0') {
            self.i += 1;
        } else if !digits(self) {
            return Err(self.err("invalid number"));
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(self.err("invalid number fraction"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !digits(self) {
                return Err(self.err("invalid number exponent"));
            }
        }
        // The token is ASCII by construction.
        std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.err("invalid number"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(self.err("invalid escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return Err(self.err("control character in string")),
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8 in string"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("invalid \\u escape"))?;
        self.i += 4;
        Ok(h)
    }

    fn unicode_escape(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.s[self.i..].starts_with(b"\\u") {
                return Err(self.err("unpaired surrogate"));
            }
            self.i += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("unpaired surrogate"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid \\u escape"))
    }
}

/// Converts a JSON number token to a `Number`: integers stay integers, others are
/// correctly rounded `f64`.
fn number(tok: &str) -> Result<Number, String> {
    let is_int = !tok.contains(['.', 'e', 'E']);
    if is_int {
        if let Ok(u) = tok.parse::<u64>() {
            return Ok(Number::from(u));
        }
        if let Ok(i) = tok.parse::<i64>() {
            return Ok(Number::from(i));
        }
    }
    let f: f64 = tok.parse().map_err(|_| format!("invalid number {tok}"))?;
    Number::from_f64(f).ok_or_else(|| format!("number {tok} is out of the f64 range"))
}

/// A scalar of a flat JSON object.
enum Scalar<'a> {
    Num(&'a str),
    Str(&'a str),
    Null,
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

/// Parses one training stats line (without its `\n`).
///
/// A fast path for flat objects of scalars; anything it does not recognise (escapes in keys,
/// nested values) goes through the general parser, so valid JSON written by other tools reads.
pub(crate) fn parse_training_line(line: &[u8]) -> Result<TrainingIterationStats, String> {
    match parse_training_fast(line) {
        Some(r) => r,
        None => {
            let text = std::str::from_utf8(line).map_err(|_| "invalid UTF-8".to_owned())?;
            let value = parse_value(text)?;
            training_from_value(value)
        }
    }
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

/// `None` means "not a simple flat object: use the general parser".
fn parse_training_fast(line: &[u8]) -> Option<Result<TrainingIterationStats, String>> {
    let mut p = Parser { s: line, i: 0 };
    p.ws();
    p.expect(b'{').ok()?;
    let mut it = None;
    let mut loss = None;
    let mut time = None;
    loop {
        p.ws();
        let key = simple_string(&mut p)?;
        p.ws();
        p.expect(b':').ok()?;
        p.ws();
        let value = match p.peek()? {
            b'"' => Scalar::Str(simple_string(&mut p)?),
            b'n' => {
                p.literal("null").ok()?;
                Scalar::Null
            }
            b'-' | b'0'..=b'9' => Scalar::Num(p.number_token().ok()?),
            _ => return None,
        };
        let float = |v: &Scalar| -> Result<f64, String> {
            match v {
                Scalar::Num(t) => t.parse::<f64>().map_err(|_| format!("invalid number {t}")),
                Scalar::Null => Ok(f64::NAN),
                Scalar::Str(s) => special_float(s),
            }
        };
        let r = match key {
            "iteration" => match value {
                Scalar::Num(t) => t
                    .parse::<u64>()
                    .map(|v| it = Some(v))
                    .map_err(|_| format!("`iteration` must be a non-negative integer, found {t}")),
                _ => Err("`iteration` must be a non-negative integer".to_owned()),
            },
            "loss" => float(&value).map(|v| loss = Some(v)),
            "time" => float(&value).map(|v| time = Some(v)),
            other => Err(format!("unknown field `{other}`")),
        };
        if let Err(e) = r {
            return Some(Err(e));
        }
        p.ws();
        match p.peek()? {
            b',' => p.i += 1,
            b'}' => {
                p.i += 1;
                break;
            }
            _ => return None,
        }
    }
    p.ws();
    if p.i != line.len() {
        return Some(Err(p.err("trailing characters after the JSON object")));
    }
    Some(build_training(it, loss, time))
}

/// A string without escapes, borrowed; `None` if it has escapes or is malformed.
fn simple_string<'a>(p: &mut Parser<'a>) -> Option<&'a str> {
    p.expect(b'"').ok()?;
    let start = p.i;
    loop {
        match p.peek()? {
            b'"' => break,
            b'\\' | 0..=0x1f => return None,
            _ => p.i += 1,
        }
    }
    let s = std::str::from_utf8(&p.s[start..p.i]).ok()?;
    p.i += 1;
    Some(s)
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
            let back = parse_value(&s).unwrap().as_f64().unwrap();
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

    #[test]
    fn general_parser_handles_strings_and_nesting() {
        let v = parse_value(r#"{"a":[1,-2,3.5e2,true,false,null],"b":"x\"\n\u00e9\ud83d\ude00"}"#)
            .unwrap();
        assert_eq!(v["a"][0].as_u64(), Some(1));
        assert_eq!(v["a"][1].as_i64(), Some(-2));
        assert_eq!(v["a"][2].as_f64(), Some(350.0));
        assert_eq!(v["b"].as_str(), Some("x\"\né😀"));
        for bad in [
            "{",
            "[1,]",
            "{\"a\" 1}",
            "\"\\ud800\"",
            "1e400",
            "nul",
            "{} {}",
            "-",
        ] {
            assert!(parse_value(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse_value(&deep).is_err());
    }
}
