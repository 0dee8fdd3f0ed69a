//! The process's own memory use as Linux reports it, for benchmarks and progress reports.

/// Peak resident memory of this process in bytes (`VmHWM`), or `None` where the kernel does
/// not report it (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Restarts the peak of [`peak_rss_bytes`] at the current resident size, so that the peak of
/// one phase can be measured; returns whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn peak_follows_a_large_allocation_and_resets() {
        assert!(reset_peak_rss());
        let before = peak_rss_bytes().unwrap_or(0);
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let during = peak_rss_bytes().unwrap_or(0);
        assert!(during >= before + (60 << 20), "{before} -> {during}");
        drop(big);
        assert!(reset_peak_rss());
        let after = peak_rss_bytes().unwrap_or(0);
        assert!(after < during, "{during} -> {after}");
    }
}
