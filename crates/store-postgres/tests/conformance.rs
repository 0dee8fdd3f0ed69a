//! The store conformance suite and concurrency checks on `PostgresStatsStore`, against the
//! server named by `DACAPO_TEST_POSTGRES_URL` (started by `cargo xtask services up postgres`);
//! skipped with a printed reason when it is unset, failed when it is set but unreachable.
//!
//! Every setup gets its own schema (dropped at the end), so tests and test processes never
//! see each other's runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dacapo_core::TrainingStats;
use dacapo_store::conformance::StatsFactory;
use dacapo_store::conformance::data::{iter_scores, meta, rec, run_name, same_stats, stats};
use dacapo_store::{StatsStore, StoreError};
use dacapo_store_postgres::PostgresStatsStore;

const URL_VAR: &str = "DACAPO_TEST_POSTGRES_URL";

/// A fresh schema on the test server, dropped when the last handle of its factory is gone.
struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    /// A new schema name, or `None` (printing why) when no server is configured; panics when
    /// the configured server is unreachable.
    fn new() -> Option<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Ok(url) = std::env::var(URL_VAR) else {
            println!("SKIPPED: {URL_VAR} is unset (run cargo xtask services up postgres)");
            return None;
        };
        // A set URL says the server runs: one that is down fails the tests, never skips them.
        if let Err(e) = postgres::Client::connect(&url, postgres::NoTls) {
            panic!(
                "{URL_VAR} is set but its server is unreachable: {e}; start it with `cargo \
                 xtask services up postgres`, or unset {URL_VAR} to skip these tests"
            );
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "t{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Some(Self { url, name })
    }

    fn open(&self) -> PostgresStatsStore {
        PostgresStatsStore::connect_in_schema(&self.url, &self.name).unwrap()
    }

    fn execute(&self, sql: &str) {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        client.batch_execute(sql).unwrap();
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ =
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

fn setup() -> Option<StatsFactory> {
    let schema = Arc::new(TestSchema::new()?);
    Some(Box::new(move || Box::new(schema.open())))
}

mod conformance {
    dacapo_store::stats_store_tests!(super::setup);
}

/// Trainers with their own connections, all connecting at once (the migration runs once
/// under its lock), append one record per call to their own runs while readers on other
/// connections only ever see a consistent prefix.
#[test]
fn many_connections_write_while_others_read() {
    const WRITERS: u64 = 6;
    const CALLS: u64 = 150;
    let Some(schema) = TestSchema::new() else {
        return;
    };
    let stores: Vec<PostgresStatsStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS + 2)
            .map(|_| scope.spawn(|| schema.open()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let (writers, readers) = stores.split_at(WRITERS as usize);
        for (r, store) in (0..).zip(writers) {
            let done = &done;
            scope.spawn(move || {
                let run = run_name(&format!("trainer-{r}"));
                let mut st = TrainingStats::new();
                let mut scores = dacapo_core::ValidationScores::new(meta());
                for i in 0..CALLS {
                    st.add_iteration_stats(rec(i, r)).unwrap();
                    store.store_training_stats(&run, &st).unwrap();
                    if (i + 1) % 50 == 0 {
                        scores
                            .add_iteration_scores(iter_scores(i + 1, [[r as f64; 2]; 2]))
                            .unwrap();
                        store
                            .store_validation_iteration_scores(&run, &scores)
                            .unwrap();
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for (k, store) in (0..).zip(readers) {
            let done = &done;
            scope.spawn(move || {
                let mut reads = 0u64;
                while done.load(Ordering::SeqCst) < WRITERS || reads < 4 {
                    let r = (reads + k) % WRITERS;
                    let run = run_name(&format!("trainer-{r}"));
                    let got = store.retrieve_training_stats(&run).unwrap();
                    assert!(
                        same_stats(&got, &stats(0..got.len() as u64, r)),
                        "reader saw an inconsistent state of `{run}`"
                    );
                    let v = store.retrieve_validation_iteration_scores(&run).unwrap();
                    for (n, x) in (1..).zip(v.scores()) {
                        assert_eq!(x, &iter_scores(50 * n, [[r as f64; 2]; 2]));
                    }
                    reads += 1;
                }
            });
        }
    });
    let fresh = schema.open();
    for r in 0..WRITERS {
        let run = run_name(&format!("trainer-{r}"));
        let got = fresh.retrieve_training_stats(&run).unwrap();
        assert!(
            same_stats(&got, &stats(0..CALLS, r)),
            "final stats of {run}"
        );
        let v = fresh.retrieve_validation_iteration_scores(&run).unwrap();
        assert_eq!(v.scores().len(), (CALLS / 50) as usize);
    }
}

/// The tables follow the documented schema: keys, one row per record, values bit for bit.
#[test]
fn rows_are_stored_as_documented() {
    let Some(schema) = TestSchema::new() else {
        return;
    };
    let s = schema.open();
    s.store_training_stats(&run_name("rows"), &stats(5..8, 0))
        .unwrap();
    s.store_validation_iteration_scores(&run_name("rows"), &{
        let mut v = dacapo_core::ValidationScores::new(meta());
        v.add_iteration_scores(iter_scores(100, [[0.5, f64::NAN], [-0.0, 2.0]]))
            .unwrap();
        v
    })
    .unwrap();
    let mut client = postgres::Client::connect(&schema.url, postgres::NoTls).unwrap();
    let q = |client: &mut postgres::Client, sql: &str| {
        client
            .query(&sql.replace("{s}", &format!("\"{}\"", schema.name)), &[])
            .unwrap()
    };
    let rows = q(
        &mut client,
        "SELECT iteration, loss FROM {s}.training_stats WHERE run = 'rows' ORDER BY iteration",
    );
    let got: Vec<(i64, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            (5, rec(5, 0).loss),
            (6, rec(6, 0).loss),
            (7, rec(7, 0).loss)
        ]
    );
    let rows = q(
        &mut client,
        "SELECT parameter, criterion, value FROM {s}.validation_scores \
         WHERE run = 'rows' AND iteration = 100 ORDER BY parameter, criterion",
    );
    let got: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get::<_, f64>(2).to_bits()))
        .collect();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0],
        ("threshold=0.25".into(), "dice".into(), 0.5f64.to_bits())
    );
    assert!(f64::from_bits(got[1].2).is_nan());
    assert_eq!(got[2].2, (-0.0f64).to_bits());
    let version: i32 = q(&mut client, "SELECT max(version) FROM {s}.schema_version")[0].get(0);
    assert_eq!(version, 1);
    // Primary keys as the issue asks.
    let pk = q(
        &mut client,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'p' AND \
         conrelid = '{s}.validation_scores'::regclass",
    );
    assert_eq!(
        pk[0].get::<_, String>(0),
        "PRIMARY KEY (run, iteration, dataset, parameter, criterion)"
    );
}

/// A database migrated by a newer version is refused with a message saying so.
#[test]
fn newer_schema_is_refused() {
    let Some(schema) = TestSchema::new() else {
        return;
    };
    drop(schema.open());
    schema.execute(&format!(
        "INSERT INTO \"{}\".schema_version (version) VALUES (99)",
        schema.name
    ));
    let err = PostgresStatsStore::connect_in_schema(&schema.url, &schema.name).unwrap_err();
    assert!(matches!(err, StoreError::Remote { .. }), "{err}");
    assert!(err.to_string().contains("version 99"), "{err}");
}

/// A URL with a password is refused; a server that is down gives a `Remote` error naming
/// the store without the user.
#[test]
fn passwords_in_urls_are_refused_and_errors_name_the_store() {
    let err = PostgresStatsStore::connect("postgres://me:secret@127.0.0.1:1/db").unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(err.to_string().contains("PGPASSWORD"), "{err}");
    // Port 1 on loopback: nothing listens there.
    let err =
        PostgresStatsStore::connect("postgres://me@127.0.0.1:1/db?connect_timeout=5").unwrap_err();
    let StoreError::Remote { store, op, .. } = &err else {
        panic!("expected a Remote error, got {err}");
    };
    assert_eq!(store, "postgres://127.0.0.1:1/db");
    assert!(op.contains("connect"), "{op}");
    assert!(matches!(
        PostgresStatsStore::connect("mysql://x"),
        Err(StoreError::Invalid(_))
    ));
}

/// A handle that appends in one statement (it remembers what it stored) still notices when
/// another handle rewrote the run in place meanwhile, at its last or first record.
#[test]
fn one_statement_appends_notice_foreign_rewrites() {
    let Some(schema) = TestSchema::new() else {
        return;
    };
    let (a, b) = (schema.open(), schema.open());
    let run = &run_name("rewritten");
    a.store_training_stats(run, &stats(0..5, 0)).unwrap();
    let mut last_differs = stats(0..4, 0);
    last_differs.add_iteration_stats(rec(4, 1)).unwrap();
    b.store_training_stats(run, &last_differs).unwrap();
    a.store_training_stats(run, &stats(0..6, 0)).unwrap();
    assert!(same_stats(
        &b.retrieve_training_stats(run).unwrap(),
        &stats(0..6, 0)
    ));
    b.store_training_stats(run, &stats(0..6, 2)).unwrap();
    a.store_training_stats(run, &stats(0..7, 0)).unwrap();
    assert!(same_stats(
        &b.retrieve_training_stats(run).unwrap(),
        &stats(0..7, 0)
    ));
    // Special values at the boundaries still allow appends after them.
    let mut special = TrainingStats::new();
    for (i, loss) in [
        f64::NAN,
        -0.0,
        f64::INFINITY,
        f64::from_bits(0x7ff8_0000_dead_beef),
    ]
    .into_iter()
    .enumerate()
    {
        special
            .add_iteration_stats(dacapo_core::TrainingIterationStats {
                iteration: i as u64,
                loss,
                time: -loss,
            })
            .unwrap();
        a.store_training_stats(&run_name("special-append"), &special)
            .unwrap();
        let back = b
            .retrieve_training_stats(&run_name("special-append"))
            .unwrap();
        assert!(same_stats(&back, &special), "{:?}", back.iteration_stats());
    }
    let back = b
        .retrieve_training_stats(&run_name("special-append"))
        .unwrap();
    assert_eq!(
        back.iteration_stats()[1].loss.to_bits(),
        (-0.0f64).to_bits()
    );
}
