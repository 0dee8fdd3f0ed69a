//! Validation of names that become path components: runs, datasets, criteria.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 128;

/// Dataset names that would collide with other entries of a run directory
/// (`<run>/<dataset>/<criterion>.json` lives beside these).
pub const RESERVED_DATASET_NAMES: [&str; 4] = ["checkpoints", "run.toml", "validation", "submit"];

/// Checks that `name` is safe as a single path component (`kind` names it in the error).
///
/// Accepted: 1 to 128 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`, so no
/// name can escape a store's root (`../x`, `/abs`), hide (`.x`) or look like a flag (`-x`).
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), CoreError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 128 characters")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if name.starts_with('-') {
        Some("it starts with '-'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character other than A-Z a-z 0-9 . _ -")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CoreError::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A validated run name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunName(String);

impl RunName {
    /// Validates and wraps a run name.
    pub fn new(name: impl Into<String>) -> Result<Self, CoreError> {
        let name = name.into();
        validate_name("run", &name)?;
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RunName {
    type Error = CoreError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RunName> for String {
    fn from(value: RunName) -> Self {
        value.0
    }
}

impl AsRef<str> for RunName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for name in [
            "a",
            "run_0",
            "quickstart-2d",
            "v1.2",
            "A.b-c_d",
            &"x".repeat(128),
        ] {
            assert!(RunName::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_names_that_escape_or_hide() {
        for name in [
            "",
            ".",
            "..",
            "../x",
            "/abs",
            "a/b",
            "a\\b",
            ".hidden",
            "-flag",
            "sp ace",
            "tab\t",
            "nul\0",
            "é",
            &"x".repeat(129),
        ] {
            let err = RunName::new(name).unwrap_err().to_string();
            assert!(err.contains("invalid run name"), "{name:?}: {err}");
        }
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<RunName>("\"../x\"").is_err());
        assert_eq!(
            serde_json::from_str::<RunName>("\"ok\"").unwrap().as_str(),
            "ok"
        );
    }
}
