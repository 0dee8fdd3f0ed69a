//! [`PostgresStatsStore`]: training stats and validation scores in PostgreSQL, so that many
//! trainers (on many machines) share one stats database.
//!
//! Semantics are those of [`FileStatsStore`](dacapo_store::FileStatsStore) (DESIGN.md): a
//! store call writes only what the database lacks; stats that end before or diverge from the
//! stored ones cut the stored ones back to the common prefix first (the caller's stats take
//! priority). Each call is one transaction, so readers only ever see whole calls.
//!
//! Tables (created by the embedded migrations in [`schema`], applied on connect):
//! ```text
//! training_stats         (run, iteration) -> loss, time
//! validation_meta        run -> datasets, criteria, higher_is_better, parameter sets
//! validation_iterations  (run, iteration) -> layout (dataset -> parameter ids present)
//! validation_scores      (run, iteration, dataset, parameter, criterion) -> value
//! run_syncs              run -> when `sync` last made it durable
//! ```
//! Floats travel in PostgreSQL's binary format, so NaN, infinities and -0 round-trip bit for
//! bit. Commits are asynchronous (`synchronous_commit = off`), like the file store's unsynced
//! appends: nothing a completed call wrote is lost when a client dies, and
//! [`StatsStore::sync`] makes everything durable against a server crash.
//!
//! The password, if the server needs one, comes from `PGPASSWORD`, never from the URL.

pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use dacapo_core::{
    Criterion, ParameterSet, RunName, Score, TrainingIterationStats, TrainingStats,
    ValidationIterationScores, ValidationMeta, ValidationScores, validate_name,
};
use dacapo_store::{Result, StatsStore, StoreError};
use postgres::config::Host;
use postgres::{Client, Config, IsolationLevel, NoTls, Statement, Transaction};

/// The error a failed database call becomes: `Remote` naming the store and the operation.
type DbResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Training stats and validation scores of runs in a PostgreSQL database (seed: DaCapo's
/// `MongoStatsStore`).
///
/// One connection per handle, shared by the handle's threads; open one handle per trainer
/// process. One writer per run (hold a [`RunLock`](dacapo_store::RunLock) or run one trainer
/// per run); any number of readers.
pub struct PostgresStatsStore {
    store: String,
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for PostgresStatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStatsStore")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The connection and its prepared statements.
struct Conn {
    client: Client,
    stmts: Statements,
    /// Per run, the first and last training record this handle last saw stored: appends
    /// that extend them take one statement, which checks that they still are.
    known: HashMap<String, (TrainingIterationStats, TrainingIterationStats)>,
}

/// Statements prepared once per connection (saves a round trip per call).
struct Statements {
    training_bounds: Statement,
    training_all: Statement,
    training_delete_from: Statement,
    training_insert: Statement,
    training_append: Statement,
}

const TRAINING_BOUNDS: &str = "(SELECT iteration, loss, time FROM training_stats WHERE run = $1 \
     ORDER BY iteration ASC LIMIT 1) UNION ALL (SELECT iteration, loss, time FROM \
     training_stats WHERE run = $1 ORDER BY iteration DESC LIMIT 1)";
const TRAINING_ALL: &str =
    "SELECT iteration, loss, time FROM training_stats WHERE run = $1 ORDER BY iteration";
const TRAINING_DELETE_FROM: &str = "DELETE FROM training_stats WHERE run = $1 AND iteration >= $2";
const TRAINING_INSERT: &str = "INSERT INTO training_stats (run, iteration, loss, time) \
     SELECT $1, * FROM UNNEST($2::bigint[], $3::double precision[], $4::double precision[])";

/// Appends `$8..$10` to run `$1` only if its first and last stored records are still
/// `($2, $3, $4)` and `($5, $6, $7)` (floats as their 8 bytes); returns whether they were.
/// One autocommitted statement, so an append is one round trip.
const TRAINING_APPEND: &str = "WITH \
     f AS (SELECT iteration, float8send(loss) AS l, float8send(time) AS t FROM training_stats \
           WHERE run = $1 ORDER BY iteration ASC LIMIT 1), \
     e AS (SELECT iteration, float8send(loss) AS l, float8send(time) AS t FROM training_stats \
           WHERE run = $1 ORDER BY iteration DESC LIMIT 1), \
     ok AS (SELECT EXISTS (SELECT 1 FROM f, e WHERE f.iteration = $2 AND f.l = $3 AND \
           f.t = $4 AND e.iteration = $5 AND e.l = $6 AND e.t = $7) AS ok), \
     ins AS (INSERT INTO training_stats (run, iteration, loss, time) \
           SELECT $1, u.i, u.l, u.t FROM ok, UNNEST($8::bigint[], $9::double precision[], \
           $10::double precision[]) AS u(i, l, t) WHERE ok.ok RETURNING 1) \
     SELECT ok.ok, (SELECT count(*) FROM ins) FROM ok";

impl Statements {
    fn prepare(client: &mut Client) -> std::result::Result<Self, postgres::Error> {
        Ok(Self {
            training_bounds: client.prepare(TRAINING_BOUNDS)?,
            training_all: client.prepare(TRAINING_ALL)?,
            training_delete_from: client.prepare(TRAINING_DELETE_FROM)?,
            training_insert: client.prepare(TRAINING_INSERT)?,
            training_append: client.prepare(TRAINING_APPEND)?,
        })
    }
}

impl PostgresStatsStore {
    /// Connects to `url` (`postgres://user@host:5432/db`), creating or migrating the tables.
    ///
    /// The password comes from `PGPASSWORD`; a URL holding one is rejected.
    pub fn connect(url: &str) -> Result<Self> {
        Self::open(url, None)
    }

    /// Like [`connect`](Self::connect), with the tables in `schema` (created if missing), so
    /// that several independent stores share one database (tests, labs).
    pub fn connect_in_schema(url: &str, schema: &str) -> Result<Self> {
        validate_name("schema", schema)?;
        Self::open(url, Some(schema))
    }

    /// The store as a URL without credentials (`postgres://host:port/db`).
    pub fn store_url(&self) -> &str {
        &self.store
    }

    fn open(url: &str, schema: Option<&str>) -> Result<Self> {
        let mut config = Config::from_str(url).map_err(|e| {
            StoreError::Invalid(format!(
                "stats store URL is not a PostgreSQL URL (postgres://user@host:port/db): {e}"
            ))
        })?;
        if config.get_password().is_some() {
            return Err(StoreError::Invalid(
                "the stats store URL holds a password; remove it and set PGPASSWORD instead".into(),
            ));
        }
        let store = describe(&config);
        if let Some(password) = std::env::var_os("PGPASSWORD") {
            config.password(password.as_encoded_bytes());
        }
        if config.get_application_name().is_none() {
            config.application_name("dacapo");
        }
        let remote = |op: &str| {
            let store = store.clone();
            let op = op.to_owned();
            move |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Remote {
                store,
                op,
                source,
            }
        };
        let mut client = config
            .connect(NoTls)
            .map_err(|e| remote("connect (is the server up and the URL right?)")(e.into()))?;
        schema::migrate(&mut client, schema)
            .map_err(remote("create or migrate the stats tables"))?;
        let stmts = Statements::prepare(&mut client)
            .map_err(|e| remote("prepare the stats statements")(e.into()))?;
        Ok(Self {
            store,
            conn: Mutex::new(Conn {
                client,
                stmts,
                known: HashMap::new(),
            }),
        })
    }

    /// Runs `f` on the connection, turning its error into [`StoreError::Remote`].
    fn with<T>(
        &self,
        op: impl FnOnce() -> String,
        f: impl FnOnce(&mut Conn) -> DbResult<T>,
    ) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn).map_err(|source| StoreError::Remote {
            store: self.store.clone(),
            op: op(),
            source,
        })
    }
}

/// `postgres://host:port/db` without user or password.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

fn to_i64(iteration: u64) -> DbResult<i64> {
    i64::try_from(iteration)
        .map_err(|_| format!("iteration {iteration} is larger than a bigint column holds").into())
}

fn to_u64(iteration: i64) -> DbResult<u64> {
    u64::try_from(iteration)
        .map_err(|_| format!("the database holds a negative iteration {iteration}").into())
}

fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn same_record(a: &TrainingIterationStats, b: &TrainingIterationStats) -> bool {
    a.iteration == b.iteration && same_f64(a.loss, b.loss) && same_f64(a.time, b.time)
}

fn training_row(row: &postgres::Row) -> DbResult<TrainingIterationStats> {
    Ok(TrainingIterationStats {
        iteration: to_u64(row.try_get(0)?)?,
        loss: row.try_get(1)?,
        time: row.try_get(2)?,
    })
}

/// Inserts `records` of `run` with one statement.
fn insert_training(
    tx: &mut Transaction<'_>,
    stmt: &Statement,
    run: &str,
    records: &[TrainingIterationStats],
) -> DbResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let iterations = records
        .iter()
        .map(|r| to_i64(r.iteration))
        .collect::<DbResult<Vec<i64>>>()?;
    let losses: Vec<f64> = records.iter().map(|r| r.loss).collect();
    let times: Vec<f64> = records.iter().map(|r| r.time).collect();
    tx.execute(stmt, &[&run, &iterations, &losses, &times])?;
    Ok(())
}

/// Makes the stored training stats of `run` equal `mem`: one statement when `mem` extends
/// what this handle last stored, else one transaction that compares, cuts back and appends.
fn store_training(conn: &mut Conn, run: &str, mem: &[TrainingIterationStats]) -> DbResult<()> {
    let known = conn.known.remove(run);
    if let Some((first, last)) = known
        && try_append(conn, run, mem, &first, &last)?
    {
        conn.known
            .insert(run.to_owned(), (mem[0], mem[mem.len() - 1]));
        return Ok(());
    }
    store_training_slow(conn, run, mem)?;
    if let (Some(first), Some(last)) = (mem.first(), mem.last()) {
        conn.known.insert(run.to_owned(), (*first, *last));
    }
    Ok(())
}

/// Appends what `mem` has past the stored `first..=last` in one statement; false (nothing
/// written) when `mem` does not extend them or the database no longer holds them.
fn try_append(
    conn: &mut Conn,
    run: &str,
    mem: &[TrainingIterationStats],
    first: &TrainingIterationStats,
    last: &TrainingIterationStats,
) -> DbResult<bool> {
    let stored = usize::try_from(last.iteration.saturating_sub(first.iteration) + 1)?;
    if mem.len() < stored || !same_record(&mem[0], first) || !same_record(&mem[stored - 1], last) {
        return Ok(false);
    }
    let rest = &mem[stored..];
    let iterations = rest
        .iter()
        .map(|r| to_i64(r.iteration))
        .collect::<DbResult<Vec<i64>>>()?;
    let losses: Vec<f64> = rest.iter().map(|r| r.loss).collect();
    let times: Vec<f64> = rest.iter().map(|r| r.time).collect();
    let bytes = |v: f64| v.to_be_bytes().to_vec();
    let row = conn.client.query_one(
        &conn.stmts.training_append,
        &[
            &run,
            &to_i64(first.iteration)?,
            &bytes(first.loss),
            &bytes(first.time),
            &to_i64(last.iteration)?,
            &bytes(last.loss),
            &bytes(last.time),
            &iterations,
            &losses,
            &times,
        ],
    )?;
    let ok: bool = row.try_get(0)?;
    let inserted: i64 = row.try_get(1)?;
    if ok && usize::try_from(inserted)? != rest.len() {
        return Err(format!("appended {inserted} of {} records", rest.len()).into());
    }
    Ok(ok)
}

/// Makes the stored training stats of `run` equal `mem` in one transaction.
fn store_training_slow(conn: &mut Conn, run: &str, mem: &[TrainingIterationStats]) -> DbResult<()> {
    let Conn { client, stmts, .. } = conn;
    let mut tx = client.transaction()?;
    let bounds = tx.query(&stmts.training_bounds, &[&run])?;
    let keep = match bounds.as_slice() {
        [] => 0,
        [first, last] => {
            let (first, last) = (training_row(first)?, training_row(last)?);
            // Stored stats are consecutive: the first and last record give their length.
            let stored = usize::try_from(last.iteration.saturating_sub(first.iteration) + 1)?;
            if mem.len() >= stored
                && same_record(&mem[0], &first)
                && same_record(&mem[stored - 1], &last)
            {
                stored
            } else {
                // Diverged (after a resume) or shorter: cut back to the exact common prefix.
                let all = tx
                    .query(&stmts.training_all, &[&run])?
                    .iter()
                    .map(training_row)
                    .collect::<DbResult<Vec<_>>>()?;
                let keep = mem
                    .iter()
                    .zip(&all)
                    .take_while(|(a, b)| same_record(a, b))
                    .count();
                if let Some(first_cut) = all.get(keep) {
                    tx.execute(
                        &stmts.training_delete_from,
                        &[&run, &to_i64(first_cut.iteration)?],
                    )?;
                }
                keep
            }
        }
        other => return Err(format!("expected 2 boundary rows, got {}", other.len()).into()),
    };
    insert_training(&mut tx, &stmts.training_insert, run, &mem[keep..])?;
    tx.commit()?;
    Ok(())
}

/// The validation scores of `run` as stored (metadata, then iterations in order).
fn read_validation(
    tx: &mut Transaction<'_>,
    run: &str,
) -> DbResult<Option<(ValidationMeta, Vec<ValidationIterationScores>)>> {
    let Some(row) = tx.query_opt(
        "SELECT datasets, criteria, higher_is_better, parameters, value_parameter, \
         value_names, parameter_values FROM validation_meta WHERE run = $1",
        &[&run],
    )?
    else {
        return Ok(None);
    };
    let datasets: Vec<String> = row.try_get(0)?;
    let criteria: Vec<String> = row.try_get(1)?;
    let higher: Vec<bool> = row.try_get(2)?;
    let ids: Vec<String> = row.try_get(3)?;
    let owners: Vec<i32> = row.try_get(4)?;
    let names: Vec<String> = row.try_get(5)?;
    let values: Vec<f64> = row.try_get(6)?;
    if criteria.len() != higher.len() || owners.len() != names.len() || names.len() != values.len()
    {
        return Err(format!("validation_meta of run `{run}` has arrays of unequal lengths").into());
    }
    let mut parameters: Vec<ParameterSet> = ids
        .into_iter()
        .map(|id| ParameterSet {
            id,
            values: BTreeMap::new(),
        })
        .collect();
    for ((owner, name), value) in owners.into_iter().zip(names).zip(values) {
        let set = usize::try_from(owner)
            .ok()
            .and_then(|i| parameters.get_mut(i))
            .ok_or_else(|| {
                format!("validation_meta of run `{run}`: bad parameter index {owner}")
            })?;
        set.values.insert(name, value);
    }
    let meta = ValidationMeta {
        parameters,
        datasets,
        criteria: criteria
            .into_iter()
            .zip(higher)
            .map(|(name, h)| Criterion::new(name, h))
            .collect(),
    };
    let mut iterations: Vec<ValidationIterationScores> = Vec::new();
    for row in tx.query(
        "SELECT iteration, layout::text FROM validation_iterations WHERE run = $1 \
         ORDER BY iteration",
        &[&run],
    )? {
        let iteration = to_u64(row.try_get(0)?)?;
        let layout: String = row.try_get(1)?;
        let layout: BTreeMap<String, Vec<String>> = schema::parse_layout(&layout)
            .map_err(|e| format!("layout of iteration {iteration} of run `{run}`: {e}"))?;
        let scores = layout
            .into_iter()
            .map(|(d, params)| {
                let per_param = params.into_iter().map(|p| (p, BTreeMap::new())).collect();
                (d, per_param)
            })
            .collect();
        iterations.push(ValidationIterationScores { iteration, scores });
    }
    let rows = tx.query(
        "SELECT iteration, dataset, parameter, criterion, value FROM validation_scores \
         WHERE run = $1 ORDER BY iteration",
        &[&run],
    )?;
    let mut at = 0usize;
    for row in rows {
        let iteration = to_u64(row.try_get(0)?)?;
        while iterations.get(at).is_some_and(|s| s.iteration < iteration) {
            at += 1;
        }
        let dataset: String = row.try_get(1)?;
        let parameter: String = row.try_get(2)?;
        let criterion: String = row.try_get(3)?;
        let value: f64 = row.try_get(4)?;
        let slot = iterations
            .get_mut(at)
            .filter(|s| s.iteration == iteration)
            .and_then(|s| s.scores.get_mut(&dataset))
            .and_then(|d| d.get_mut(&parameter))
            .ok_or_else(|| {
                format!(
                    "validation_scores of run `{run}` has a score for iteration {iteration}, \
                     dataset `{dataset}`, parameter `{parameter}` outside its layout"
                )
            })?;
        slot.insert(criterion, Score(value));
    }
    Ok(Some((meta, iterations)))
}

/// Bit-exact (NaN-equal) equality of two iterations' scores.
fn same_iteration(a: &ValidationIterationScores, b: &ValidationIterationScores) -> bool {
    a.iteration == b.iteration
        && a.scores.len() == b.scores.len()
        && a.scores.iter().zip(&b.scores).all(|((da, pa), (db, pb))| {
            da == db
                && pa.len() == pb.len()
                && pa.iter().zip(pb).all(|((ia, ca), (ib, cb))| {
                    ia == ib
                        && ca.len() == cb.len()
                        && ca
                            .iter()
                            .zip(cb)
                            .all(|((na, va), (nb, vb))| na == nb && same_f64(va.0, vb.0))
                })
        })
}

/// Bit-exact (NaN-equal) equality of validation metadata.
fn same_meta(a: &ValidationMeta, b: &ValidationMeta) -> bool {
    a.datasets == b.datasets
        && a.criteria == b.criteria
        && a.parameters.len() == b.parameters.len()
        && a.parameters.iter().zip(&b.parameters).all(|(x, y)| {
            x.id == y.id
                && x.values.len() == y.values.len()
                && x.values
                    .iter()
                    .zip(&y.values)
                    .all(|((nx, vx), (ny, vy))| nx == ny && same_f64(*vx, *vy))
        })
}

fn write_meta(tx: &mut Transaction<'_>, run: &str, meta: &ValidationMeta) -> DbResult<()> {
    let criteria: Vec<&str> = meta.criteria.iter().map(|c| c.name.as_str()).collect();
    let higher: Vec<bool> = meta.criteria.iter().map(|c| c.higher_is_better).collect();
    let ids: Vec<&str> = meta.parameters.iter().map(|p| p.id.as_str()).collect();
    let mut owners = Vec::new();
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (i, p) in meta.parameters.iter().enumerate() {
        for (name, value) in &p.values {
            owners.push(i32::try_from(i)?);
            names.push(name.as_str());
            values.push(*value);
        }
    }
    tx.execute(
        "INSERT INTO validation_meta (run, datasets, criteria, higher_is_better, parameters, \
         value_parameter, value_names, parameter_values) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (run) DO UPDATE SET datasets = excluded.datasets, \
         criteria = excluded.criteria, higher_is_better = excluded.higher_is_better, \
         parameters = excluded.parameters, value_parameter = excluded.value_parameter, \
         value_names = excluded.value_names, parameter_values = excluded.parameter_values",
        &[
            &run,
            &meta.datasets,
            &criteria,
            &higher,
            &ids,
            &owners,
            &names,
            &values,
        ],
    )?;
    Ok(())
}

/// Deletes the stored validations of `run` from iteration `from` on.
fn delete_validations_from(tx: &mut Transaction<'_>, run: &str, from: u64) -> DbResult<()> {
    let from = to_i64(from)?;
    tx.execute(
        "DELETE FROM validation_scores WHERE run = $1 AND iteration >= $2",
        &[&run, &from],
    )?;
    tx.execute(
        "DELETE FROM validation_iterations WHERE run = $1 AND iteration >= $2",
        &[&run, &from],
    )?;
    Ok(())
}

/// Inserts `iterations` of `run`: one statement for the layouts, one for the values.
fn insert_validations(
    tx: &mut Transaction<'_>,
    run: &str,
    iterations: &[ValidationIterationScores],
) -> DbResult<()> {
    if iterations.is_empty() {
        return Ok(());
    }
    let mut its = Vec::with_capacity(iterations.len());
    let mut layouts = Vec::with_capacity(iterations.len());
    let (mut s_it, mut s_d, mut s_p, mut s_c, mut s_v) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in iterations {
        let it = to_i64(s.iteration)?;
        its.push(it);
        layouts.push(schema::layout_json(&s.scores));
        for (d, per_param) in &s.scores {
            for (p, per_crit) in per_param {
                for (c, v) in per_crit {
                    s_it.push(it);
                    s_d.push(d.as_str());
                    s_p.push(p.as_str());
                    s_c.push(c.as_str());
                    s_v.push(v.0);
                }
            }
        }
    }
    tx.execute(
        "INSERT INTO validation_iterations (run, iteration, layout) \
         SELECT $1, i, l::jsonb FROM UNNEST($2::bigint[], $3::text[]) AS u(i, l)",
        &[&run, &its, &layouts],
    )?;
    if !s_it.is_empty() {
        tx.execute(
            "INSERT INTO validation_scores (run, iteration, dataset, parameter, criterion, value) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], \
             $6::double precision[])",
            &[&run, &s_it, &s_d, &s_p, &s_c, &s_v],
        )?;
    }
    Ok(())
}

/// Makes the stored validation scores of `run` equal `scores` in one transaction.
fn store_validation(conn: &mut Conn, run: &str, scores: &ValidationScores) -> DbResult<()> {
    let mut tx = conn.client.transaction()?;
    // Serialises writers of this run, so the read-compare-write below sees no foreign write.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&schema::RUN_LOCK_CLASS, &run],
    )?;
    let stored = read_validation(&mut tx, run)?;
    let mem = scores.scores();
    let keep = match &stored {
        Some((meta, stored)) if same_meta(meta, &scores.meta) => {
            let keep = mem
                .iter()
                .zip(stored)
                .take_while(|(a, b)| same_iteration(a, b))
                .count();
            if let Some(first_cut) = stored.get(keep) {
                delete_validations_from(&mut tx, run, first_cut.iteration)?;
            }
            keep
        }
        // New or changed metadata: every stored score is rewritten under it.
        _ => {
            write_meta(&mut tx, run, &scores.meta)?;
            delete_validations_from(&mut tx, run, 0)?;
            0
        }
    };
    insert_validations(&mut tx, run, &mem[keep..])?;
    tx.commit()?;
    Ok(())
}

impl StatsStore for PostgresStatsStore {
    fn store_training_stats(&self, run: &RunName, stats: &TrainingStats) -> Result<()> {
        let run = run.as_str();
        self.with(
            || format!("store the training stats of run `{run}`"),
            |conn| store_training(conn, run, stats.iteration_stats()),
        )
    }

    fn retrieve_training_stats(&self, run: &RunName) -> Result<TrainingStats> {
        let run = run.as_str();
        self.with(
            || format!("read the training stats of run `{run}`"),
            |conn| {
                let Conn { client, stmts, .. } = conn;
                let records = client
                    .query(&stmts.training_all, &[&run])?
                    .iter()
                    .map(training_row)
                    .collect::<DbResult<Vec<_>>>()?;
                Ok(TrainingStats::from_records(records)?)
            },
        )
    }

    fn store_validation_iteration_scores(
        &self,
        run: &RunName,
        scores: &ValidationScores,
    ) -> Result<()> {
        let run = run.as_str();
        self.with(
            || format!("store the validation scores of run `{run}`"),
            |conn| store_validation(conn, run, scores),
        )
    }

    fn retrieve_validation_iteration_scores(&self, run: &RunName) -> Result<ValidationScores> {
        let run = run.as_str();
        self.with(
            || format!("read the validation scores of run `{run}`"),
            |conn| {
                // One snapshot for the three tables.
                let mut tx = conn
                    .client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let stored = read_validation(&mut tx, run)?;
                tx.commit()?;
                let Some((meta, iterations)) = stored else {
                    return Ok(ValidationScores::default());
                };
                let mut out = ValidationScores::new(meta);
                for s in iterations {
                    out.add_iteration_scores(s)?;
                }
                Ok(out)
            },
        )
    }

    fn delete_training_stats(&self, run: &RunName) -> Result<()> {
        let run = run.as_str();
        self.with(
            || format!("delete the training stats of run `{run}`"),
            |conn| {
                conn.known.remove(run);
                conn.client
                    .execute("DELETE FROM training_stats WHERE run = $1", &[&run])?;
                Ok(())
            },
        )
    }

    fn delete_validation_scores(&self, run: &RunName) -> Result<()> {
        let run = run.as_str();
        self.with(
            || format!("delete the validation scores of run `{run}`"),
            |conn| {
                let mut tx = conn.client.transaction()?;
                delete_validations_from(&mut tx, run, 0)?;
                tx.execute("DELETE FROM validation_meta WHERE run = $1", &[&run])?;
                tx.commit()?;
                Ok(())
            },
        )
    }

    fn sync(&self, run: &RunName) -> Result<()> {
        let run = run.as_str();
        self.with(
            || format!("make the stats of run `{run}` durable"),
            |conn| {
                let mut tx = conn.client.transaction()?;
                tx.batch_execute("SET LOCAL synchronous_commit = on")?;
                // A write, so the commit flushes the WAL, with it every earlier async commit.
                tx.execute(
                    "INSERT INTO run_syncs (run, synced_at) VALUES ($1, now()) \
                     ON CONFLICT (run) DO UPDATE SET synced_at = excluded.synced_at",
                    &[&run],
                )?;
                tx.commit()?;
                Ok(())
            },
        )
    }
}
