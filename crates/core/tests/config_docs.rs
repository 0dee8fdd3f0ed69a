//! docs/config.md cannot drift: every TOML block parses with the real config types, and
//! every key the types serialise appears in the documented blocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use dacapo_core::RunConfig;

fn doc() -> (String, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    let full = blocks.remove(0);
    (full, blocks)
}

/// Dotted key paths of a TOML value (array-of-table entries are merged).
fn keys(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                keys(&p, v, out);
            }
        }
        toml::Value::Array(a) => {
            for v in a.iter().filter(|v| v.is_table()) {
                keys(prefix, v, out);
            }
        }
        _ => {}
    }
}

fn key_set(toml_text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    keys(
        "",
        &toml::Value::Table(toml_text.parse::<toml::Table>().unwrap()),
        &mut out,
    );
    out
}

#[test]
fn every_documented_block_parses_and_every_key_is_documented() {
    let (full, task_blocks) = doc();
    let config = RunConfig::from_toml(&full, Path::new("docs/config.md"))
        .unwrap_or_else(|e| panic!("the complete config of docs/config.md: {e}"));
    let documented = key_set(&full);
    let serialised = key_set(&config.to_toml());
    let missing: Vec<_> = serialised.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/config.md: {missing:?}"
    );

    assert_eq!(task_blocks.len(), 4, "one block per task kind");
    let base: toml::Table = full.parse().unwrap();
    for block in task_blocks {
        let task: toml::Table = block.parse().unwrap();
        let mut merged = base.clone();
        merged.insert("task".into(), task["task"].clone());
        let text = toml::to_string(&merged).unwrap();
        let config = RunConfig::from_toml(&text, Path::new("docs/config.md"))
            .unwrap_or_else(|e| panic!("task block of docs/config.md:\n{block}\n{e}"));
        let documented = key_set(&block);
        let serialised: BTreeSet<_> = key_set(&config.to_toml())
            .into_iter()
            .filter(|k| k.starts_with("task"))
            .collect();
        let missing: Vec<_> = serialised.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "task keys missing from docs/config.md: {missing:?}"
        );
    }
}
