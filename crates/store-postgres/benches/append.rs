//! Stats append throughput into PostgreSQL: 8 trainers (threads, each with its own
//! connection and run) appending one training record per call, as a trainer storing every
//! step would. Prints one JSON line; skips with a message when `DACAPO_TEST_POSTGRES_URL` is
//! unset (run `cargo xtask services up postgres`). `DACAPO_BENCH_CALLS` sets the calls per
//! trainer (default 2000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Barrier;
use std::time::Instant;

use dacapo_core::{TrainingIterationStats, TrainingStats};
use dacapo_store::StatsStore;
use dacapo_store::conformance::data::run_name;
use dacapo_store_postgres::PostgresStatsStore;

const TRAINERS: usize = 8;

fn main() {
    let Ok(url) = std::env::var("DACAPO_TEST_POSTGRES_URL") else {
        println!(
            "SKIPPED pg_append_8_runs: DACAPO_TEST_POSTGRES_URL is unset (run cargo xtask \
             services up postgres)"
        );
        return;
    };
    let calls: u64 = std::env::var("DACAPO_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let schema = format!("bench_{}", std::process::id());
    let stores: Vec<PostgresStatsStore> = (0..TRAINERS)
        .map(|_| PostgresStatsStore::connect_in_schema(&url, &schema).unwrap())
        .collect();
    let barrier = Barrier::new(TRAINERS + 1);
    let (elapsed, mut latencies) = std::thread::scope(|scope| {
        let workers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(t, store)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let run = run_name(&format!("bench-{t}"));
                    let mut stats = TrainingStats::new();
                    let mut latencies = Vec::with_capacity(calls as usize);
                    barrier.wait();
                    for i in 0..calls {
                        stats
                            .add_iteration_stats(TrainingIterationStats {
                                iteration: i,
                                loss: 1.0 / (i as f64 + 1.0),
                                time: 0.05,
                            })
                            .unwrap();
                        let start = Instant::now();
                        store.store_training_stats(&run, &stats).unwrap();
                        latencies.push(start.elapsed().as_secs_f64());
                    }
                    latencies
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let latencies: Vec<f64> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (start.elapsed().as_secs_f64(), latencies)
    });
    for (t, store) in stores.iter().enumerate() {
        let n = store
            .retrieve_training_stats(&run_name(&format!("bench-{t}")))
            .unwrap()
            .len();
        assert_eq!(n as u64, calls, "trainer {t} stored {n} of {calls} records");
    }
    drop(stores);
    if let Ok(mut client) = postgres::Client::connect(&url, postgres::NoTls) {
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    }
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] * 1e3;
    let rows = (TRAINERS as u64 * calls) as f64;
    println!(
        "{{\"workload\":\"pg_append_8_runs\",\"rows_per_s\":{:.0},\"trainers\":{TRAINERS},\
         \"calls_per_trainer\":{calls},\"seconds\":{elapsed:.3},\"call_ms_p50\":{:.3},\
         \"call_ms_p99\":{:.3}}}",
        rows / elapsed,
        quantile(0.5),
        quantile(0.99)
    );
}
