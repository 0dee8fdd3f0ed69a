//! Checkpoint upload throughput (placeholder).

fn main() {}
