//! The `dacapo` command-line tool.
fn main() {}
