//! Helpers shared by the integration tests: the S3 test URL with a unique prefix.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable naming the S3 test bucket (set by `cargo xtask services up s3`).
pub const S3_ENV: &str = "DACAPO_TEST_S3_URL";

/// `$DACAPO_TEST_S3_URL/<what>-<unique>`, or `None` (printing why the test skips) when the
/// variable is unset.
pub fn s3_url(what: &str) -> Option<String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Ok(base) = std::env::var(S3_ENV) else {
        println!(
            "SKIPPED: {S3_ENV} is not set (run `cargo xtask services up s3` and export `cargo xtask services env`)"
        );
        return None;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Some(format!(
        "{}/{what}-{}-{nanos}-{}",
        base.trim_end_matches('/'),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}
