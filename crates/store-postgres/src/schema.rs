//! The embedded schema migrations and the layout column of `validation_iterations`.
//!
//! Migration `n` (1-based) is `MIGRATIONS[n - 1]`; `schema_version` lists the applied ones.
//! They are applied on connect, in one transaction holding a transaction-level advisory lock,
//! so concurrent connects (many trainers starting at once) apply each migration once.
//! Append new migrations; never edit an applied one.

use std::collections::BTreeMap;

use dacapo_core::ScoreTable;
use postgres::Client;

/// The advisory lock class (first key) of per-run write locks; the second key is the
/// `hashtext` of the run name.
pub const RUN_LOCK_CLASS: i32 = 0x0dac_a907;

/// The advisory lock key held while migrating.
const MIGRATION_LOCK: i64 = 0x0dac_a90d_5ca1_e001;

/// The migrations, oldest first.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial tables.
    "CREATE TABLE training_stats (
        run text NOT NULL,
        iteration bigint NOT NULL CHECK (iteration >= 0),
        loss double precision NOT NULL,
        time double precision NOT NULL,
        PRIMARY KEY (run, iteration)
    );
    -- One row per run; parameter set values are flattened: value i belongs to the parameter
    -- set at index value_parameter[i] of parameters.
    CREATE TABLE validation_meta (
        run text PRIMARY KEY,
        datasets text[] NOT NULL,
        criteria text[] NOT NULL,
        higher_is_better boolean[] NOT NULL,
        parameters text[] NOT NULL,
        value_parameter integer[] NOT NULL,
        value_names text[] NOT NULL,
        parameter_values double precision[] NOT NULL
    );
    -- layout: dataset -> ids of the parameter sets present (also empty ones), so score
    -- tables that are empty at any level read back as stored.
    CREATE TABLE validation_iterations (
        run text NOT NULL,
        iteration bigint NOT NULL CHECK (iteration >= 0),
        layout jsonb NOT NULL,
        PRIMARY KEY (run, iteration)
    );
    CREATE TABLE validation_scores (
        run text NOT NULL,
        iteration bigint NOT NULL,
        dataset text NOT NULL,
        parameter text NOT NULL,
        criterion text NOT NULL,
        value double precision NOT NULL,
        PRIMARY KEY (run, iteration, dataset, parameter, criterion)
    );
    CREATE TABLE run_syncs (
        run text PRIMARY KEY,
        synced_at timestamptz NOT NULL
    );",
];

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates `schema` if given (and makes it the session's), then applies the missing
/// migrations; an error if the database was migrated by a newer version.
pub fn migrate(
    client: &mut Client,
    schema: Option<&str>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Appends commit asynchronously; `sync` commits synchronously (see the crate docs).
    client.batch_execute("SET synchronous_commit = off")?;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    if let Some(schema) = schema {
        let q = quote_ident(schema);
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {q}; SET search_path TO {q}"
        ))?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )?;
    let applied: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])?
        .try_get(0)?;
    let known = i32::try_from(MIGRATIONS.len())?;
    if applied > known {
        return Err(format!(
            "the database schema is at version {applied}, newer than this dacapo knows \
             ({known}); upgrade dacapo"
        )
        .into());
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(usize::try_from(applied)?) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The layout of a score table as JSON: dataset → parameter ids present.
pub fn layout_json(scores: &ScoreTable) -> String {
    let layout: BTreeMap<&str, Vec<&str>> = scores
        .iter()
        .map(|(d, per_param)| (d.as_str(), per_param.keys().map(String::as_str).collect()))
        .collect();
    // Maps of strings always serialise.
    serde_json::to_string(&layout).unwrap_or_default()
}

/// Parses a layout written by [`layout_json`].
pub fn parse_layout(text: &str) -> Result<BTreeMap<String, Vec<String>>, serde_json::Error> {
    serde_json::from_str(text)
}
