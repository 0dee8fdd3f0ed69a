//! [`StoreUrl`]: the `[stores] stats` and `weights` URLs of a run config, parsed by scheme.
//!
//! Credentials never live in a run config (it is frozen next to the run and shared): a URL
//! with a password (PostgreSQL) or any user info or options (S3) is refused, and the error
//! names the environment variables that carry them instead.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use crate::error::{Result, StoreError};

/// A store location named by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `postgres://[user@]host[:port]/db[?options]` (password from `PGPASSWORD`): a stats store.
    Postgres(Url),
    /// `s3://bucket/prefix` (credentials, endpoint, region from `AWS_*`): a weights store.
    S3 {
        /// The bucket.
        bucket: String,
        /// Key prefix inside the bucket (empty for the bucket's root).
        prefix: String,
    },
    /// `file:///absolute/dir`: a weights store in object-store layout in a local directory.
    File(PathBuf),
    /// `memory://prefix`: a weights store in memory, private to one handle (tests).
    Memory(String),
}

/// The schemes [`StoreUrl::parse`] knows, for error messages.
const KNOWN: &str = "postgres://host/db, s3://bucket/prefix, file:///path or memory://";

impl StoreUrl {
    /// Parses a store URL; an unknown scheme, a missing bucket or path, or credentials in the
    /// URL are `StoreError::Invalid` errors saying what to write instead.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |why: &str| StoreError::Invalid(format!("store URL {text:?} {why}"));
        let url =
            Url::parse(text).map_err(|e| invalid(&format!("is not a URL ({e}); use {KNOWN}")))?;
        match url.scheme() {
            "postgres" | "postgresql" => {
                if url.password().is_some() {
                    // The message must not repeat the URL: it holds the password.
                    return Err(StoreError::Invalid(
                        "the stats store URL holds a password; remove it and set PGPASSWORD \
                         instead"
                            .into(),
                    ));
                }
                Ok(Self::Postgres(url))
            }
            "s3" | "s3a" => {
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(StoreError::Invalid(
                        "the weights store URL holds credentials; remove them and set \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"
                            .into(),
                    ));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(invalid(
                        "has options in it: set them in AWS_* environment variables \
                         (AWS_ENDPOINT_URL, AWS_REGION, ...)",
                    ));
                }
                let bucket = url.host_str().unwrap_or_default();
                if bucket.is_empty() {
                    return Err(invalid("names no bucket; use s3://bucket/prefix"));
                }
                Ok(Self::S3 {
                    bucket: bucket.to_owned(),
                    prefix: url.path().trim_matches('/').to_owned(),
                })
            }
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(invalid("is not an absolute file:/// URL (three slashes)"));
                }
                let path = url
                    .to_file_path()
                    .map_err(|()| invalid("is not an absolute file:/// URL"))?;
                Ok(Self::File(path))
            }
            "memory" => {
                let mut prefix = url.host_str().unwrap_or_default().to_owned();
                prefix.push_str(url.path());
                Ok(Self::Memory(prefix.trim_matches('/').to_owned()))
            }
            other => Err(invalid(&format!(
                "has an unknown scheme {other:?}; use {KNOWN}"
            ))),
        }
    }

    /// Whether this URL names a stats store (else a weights store).
    pub fn is_stats(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// The URL without credentials (safe in messages and logs).
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(url) => {
                let host = url.host_str().unwrap_or_default();
                match url.port() {
                    Some(port) => write!(f, "postgres://{host}:{port}{}", url.path()),
                    None => write!(f, "postgres://{host}{}", url.path()),
                }
            }
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::File(path) => write!(f, "file://{}", path.display()),
            Self::Memory(prefix) => write!(f, "memory://{prefix}"),
        }
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_parse_into_their_variant() {
        let pg = StoreUrl::parse("postgres://me@db.lab:5433/dacapo?connect_timeout=5").unwrap();
        assert!(pg.is_stats());
        assert_eq!(pg.to_string(), "postgres://db.lab:5433/dacapo");
        assert!(StoreUrl::parse("postgresql://h/db").unwrap().is_stats());
        assert_eq!(
            StoreUrl::parse("s3://bucket/a/b/").unwrap(),
            StoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("s3a://bucket").unwrap().to_string(),
            "s3://bucket"
        );
        assert_eq!(
            StoreUrl::parse("file:///tmp/store/").unwrap(),
            StoreUrl::File(PathBuf::from("/tmp/store/"))
        );
        assert_eq!(
            StoreUrl::parse("memory://a/b").unwrap(),
            StoreUrl::Memory("a/b".into())
        );
        assert_eq!(
            StoreUrl::parse("memory://").unwrap(),
            StoreUrl::Memory(String::new())
        );
    }

    #[test]
    fn bad_urls_and_credentials_are_refused() {
        for bad in [
            "",
            "runs/dir",
            "/plain/path",
            "mysql://x",
            "s3://",
            "s3:///prefix",
            "s3://key:secret@bucket/p",
            "s3://key@bucket/p",
            "s3://bucket/p?region=x",
            "file://relative/dir",
            "postgres://me:secret@host/db",
        ] {
            let err = StoreUrl::parse(bad).unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{bad}: {err}");
            assert!(!err.to_string().contains("secret"), "{bad}: {err}");
        }
        let err = StoreUrl::parse("postgres://me:secret@host/db").unwrap_err();
        assert!(err.to_string().contains("PGPASSWORD"), "{err}");
        let err = StoreUrl::parse("s3://k:secret@bucket").unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    }
}
