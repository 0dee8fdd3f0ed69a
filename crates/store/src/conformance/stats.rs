//! Checks of [`StatsStore`] semantics (the contract of `FileStatsStore`, DESIGN.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dacapo_core::{
    RunName, Score, TrainingIterationStats, TrainingStats, ValidationIterationScores,
    ValidationScores,
};

use super::data::{
    Rng, iter_scores, meta, rec, run_name, same_scores, same_stats, sample_scores, stats,
};
use crate::traits::StatsStore;

type Open<'a> = &'a dyn Fn() -> Box<dyn StatsStore>;

fn assert_training(s: &dyn StatsStore, run: &RunName, expected: &TrainingStats, what: &str) {
    let back = s
        .retrieve_training_stats(run)
        .unwrap_or_else(|e| panic!("{what}: retrieve_training_stats({run}) failed: {e}"));
    assert!(
        same_stats(&back, expected),
        "{what}: run `{run}` stored\n{:?}\nbut read back\n{:?}",
        expected.iteration_stats(),
        back.iteration_stats()
    );
}

fn assert_scores(s: &dyn StatsStore, run: &RunName, expected: &ValidationScores, what: &str) {
    let back = s
        .retrieve_validation_iteration_scores(run)
        .unwrap_or_else(|e| panic!("{what}: retrieve_validation_iteration_scores({run}): {e}"));
    assert!(
        same_scores(&back, expected),
        "{what}: run `{run}` stored\n{expected:?}\nbut read back\n{back:?}"
    );
}

/// Unknown runs read as empty; stored stats read back bit for bit, from this handle and a
/// new one; storing the same stats again or one more iteration keeps them equal.
pub fn training_round_trip(open: Open<'_>) {
    let s = open();
    let run = &run_name("train-round-trip");
    assert!(s.retrieve_training_stats(run).unwrap().is_empty());
    let mut st = stats(0..50, 0);
    s.store_training_stats(run, &st).unwrap();
    assert_training(&*s, run, &st, "first store");
    s.store_training_stats(run, &st).unwrap();
    assert_training(&*s, run, &st, "same stats stored again");
    st.add_iteration_stats(rec(50, 0)).unwrap();
    s.store_training_stats(run, &st).unwrap();
    assert_training(&*s, run, &st, "one iteration appended");
    assert_training(&*open(), run, &st, "read by a new handle");
    // Stats need not start at 0 (a run resumed after its stats were deleted).
    let late = stats(1000..1010, 0);
    s.store_training_stats(&run_name("train-round-trip-late"), &late)
        .unwrap();
    assert_training(
        &*open(),
        &run_name("train-round-trip-late"),
        &late,
        "stats from 1000",
    );
    s.sync(run).unwrap();
    s.sync(&run_name("train-round-trip-never-stored")).unwrap();
}

/// NaN, infinities, -0, subnormals and extremes survive bit for bit.
pub fn training_special_values(open: Open<'_>) {
    let s = open();
    let run = &run_name("train-special");
    let specials = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        1e-320,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        0.1 + 0.2,
        std::f64::consts::PI,
    ];
    let mut st = TrainingStats::new();
    for (i, &loss) in specials.iter().enumerate() {
        let time = specials[(i + 3) % specials.len()];
        st.add_iteration_stats(TrainingIterationStats {
            iteration: i as u64,
            loss,
            time,
        })
        .unwrap();
    }
    s.store_training_stats(run, &st).unwrap();
    assert_training(&*s, run, &st, "special values");
    assert_training(&*open(), run, &st, "special values, new handle");
    let back = open().retrieve_training_stats(run).unwrap();
    assert_eq!(
        back.iteration_stats()[3].loss.to_bits(),
        (-0.0f64).to_bits()
    );
}

/// Stats that end earlier or diverge from the stored ones (after a resume) replace them
/// from the first difference on; the caller's stats take priority.
pub fn training_divergence_takes_priority(open: Open<'_>) {
    let s = open();
    let run = &run_name("train-diverge");
    s.store_training_stats(run, &stats(0..100, 0)).unwrap();
    // Resume from checkpoint 40: the trainer cuts its stats back, then trains differently.
    let mut st = s.retrieve_training_stats(run).unwrap();
    st.delete_after(40);
    s.store_training_stats(run, &st).unwrap();
    assert_training(&*s, run, &stats(0..40, 0), "cut back to 40");
    for i in 40..60 {
        st.add_iteration_stats(rec(i, 1)).unwrap();
    }
    s.store_training_stats(run, &st).unwrap();
    assert_training(&*s, run, &st, "trained on differently");
    // Diverged in place (same length, other values from 50 on), stored by a new handle.
    let mut other = stats(0..40, 0);
    for i in 40..50 {
        other.add_iteration_stats(rec(i, 1)).unwrap();
    }
    for i in 50..60 {
        other.add_iteration_stats(rec(i, 2)).unwrap();
    }
    let s2 = open();
    s2.store_training_stats(run, &other).unwrap();
    assert_training(&*s2, run, &other, "diverged in place");
    // Diverged from the first record on.
    let first = stats(0..30, 7);
    s2.store_training_stats(run, &first).unwrap();
    assert_training(&*s2, run, &first, "diverged at the first record");
    // Stats starting elsewhere replace all.
    let late = stats(500..505, 3);
    s.store_training_stats(run, &late).unwrap();
    assert_training(&*s, run, &late, "stats starting at 500");
    // Longer stats that start earlier than the stored ones replace all.
    let early = stats(0..600, 3);
    s.store_training_stats(run, &early).unwrap();
    assert_training(
        &*open(),
        run,
        &early,
        "stats starting before the stored ones",
    );
    // Empty stats empty the run.
    s.store_training_stats(run, &TrainingStats::new()).unwrap();
    assert!(s.retrieve_training_stats(run).unwrap().is_empty());
    assert!(open().retrieve_training_stats(run).unwrap().is_empty());
}

/// Deleting removes the training stats (no error when there are none) and nothing else.
pub fn training_delete(open: Open<'_>) {
    let s = open();
    let run = &run_name("train-delete");
    s.delete_training_stats(run).unwrap();
    s.store_training_stats(run, &stats(0..5, 0)).unwrap();
    s.store_validation_iteration_scores(run, &sample_scores())
        .unwrap();
    s.delete_training_stats(run).unwrap();
    assert!(s.retrieve_training_stats(run).unwrap().is_empty());
    assert!(open().retrieve_training_stats(run).unwrap().is_empty());
    assert_scores(
        &*s,
        run,
        &sample_scores(),
        "scores after deleting training stats",
    );
    // Storing again after the delete starts afresh, also from the same stats as before.
    s.store_training_stats(run, &stats(3..6, 0)).unwrap();
    assert_training(&*s, run, &stats(3..6, 0), "stored after delete");
    s.delete_training_stats(run).unwrap();
    s.store_training_stats(run, &stats(3..6, 0)).unwrap();
    assert_training(&*open(), run, &stats(3..6, 0), "same stats after delete");
    // A delete through another handle is seen by this one's next store.
    open().delete_training_stats(run).unwrap();
    s.store_training_stats(run, &stats(3..8, 0)).unwrap();
    assert_training(
        &*open(),
        run,
        &stats(3..8, 0),
        "store after a foreign delete",
    );
    s.sync(run).unwrap();
}

/// Two handles writing the same run in turn (a crashed trainer and its successor) never
/// lose or duplicate records.
pub fn training_handles_take_turns(open: Open<'_>) {
    let (a, b) = (open(), open());
    let run = &run_name("train-turns");
    a.store_training_stats(run, &stats(0..5, 0)).unwrap();
    b.store_training_stats(run, &stats(0..7, 0)).unwrap();
    assert_training(&*a, run, &stats(0..7, 0), "b extended a's stats");
    a.store_training_stats(run, &stats(0..8, 0)).unwrap();
    assert_training(&*b, run, &stats(0..8, 0), "a extended b's stats");
    b.store_training_stats(run, &stats(0..3, 0)).unwrap();
    a.store_training_stats(run, &stats(0..4, 1)).unwrap();
    assert_training(&*b, run, &stats(0..4, 1), "a replaced b's shorter stats");
    b.store_training_stats(run, &stats(0..4, 1)).unwrap();
    assert_training(&*open(), run, &stats(0..4, 1), "b stored the same");
}

/// Random store/cut back/extend/reopen sequences read back exactly what was stored last.
pub fn training_random_sequences(open: Open<'_>) {
    for seed in 0..24u64 {
        let run = run_name(&format!("train-random-{seed}"));
        let mut rng = Rng::new(seed + 1);
        let start = rng.below(1000);
        let mut s = open();
        let mut mem = TrainingStats::new();
        for _ in 0..(1 + rng.below(30)) {
            match rng.below(8) {
                0..=2 => {
                    for _ in 0..rng.below(20) {
                        let iteration = if mem.is_empty() {
                            start
                        } else {
                            mem.trained_until()
                        };
                        let (loss, time) = (rng.any_f64(), rng.any_f64());
                        mem.add_iteration_stats(TrainingIterationStats {
                            iteration,
                            loss,
                            time,
                        })
                        .unwrap();
                    }
                }
                3 => {
                    let back = rng.below(25);
                    mem.delete_after(mem.trained_until().saturating_sub(back));
                }
                4..=6 => {
                    s.store_training_stats(&run, &mem).unwrap();
                    assert_training(&*s, &run, &mem, &format!("random sequence {seed}"));
                }
                _ => s = open(),
            }
        }
    }
}

/// Scores and their metadata round trip (NaN, ±inf, -0 included); a resume keeps
/// validations up to the checkpoint and adds new ones; unknown runs read as empty.
pub fn validation_round_trip(open: Open<'_>) {
    let s = open();
    let run = &run_name("val-round-trip");
    let empty = s.retrieve_validation_iteration_scores(run).unwrap();
    assert_eq!(empty, ValidationScores::default(), "unknown run");
    let v = sample_scores();
    s.store_validation_iteration_scores(run, &v).unwrap();
    assert_scores(&*s, run, &v, "sample scores");
    assert_scores(&*open(), run, &v, "sample scores, new handle");
    let back = s.retrieve_validation_iteration_scores(run).unwrap();
    assert!(
        back.scores()[0]
            .get("val0", "threshold=0.50", "voi")
            .is_some_and(f64::is_nan)
    );
    s.store_validation_iteration_scores(run, &v).unwrap();
    assert_scores(&*s, run, &v, "stored again");
    // Resume from checkpoint 100 keeps validations <= 100, then validates 150.
    let mut resumed = back.clone();
    resumed.delete_after(101);
    resumed
        .add_iteration_scores(iter_scores(150, [[0.7, 1.0], [0.8, 0.5]]))
        .unwrap();
    s.store_validation_iteration_scores(run, &resumed).unwrap();
    assert_scores(&*open(), run, &resumed, "resumed");
    // Revalidation changes a value in place.
    let mut revalidated = ValidationScores::new(meta());
    revalidated
        .add_iteration_scores(iter_scores(100, [[0.5, 2.0], [0.6, 0.0]]))
        .unwrap();
    revalidated
        .add_iteration_scores(resumed.scores()[1].clone())
        .unwrap();
    open()
        .store_validation_iteration_scores(run, &revalidated)
        .unwrap();
    assert_scores(&*s, run, &revalidated, "revalidated in place");
    // Empty scores (with the metadata) empty the run's scores.
    s.store_validation_iteration_scores(run, &ValidationScores::new(meta()))
        .unwrap();
    assert_scores(&*open(), run, &ValidationScores::new(meta()), "emptied");
    s.sync(run).unwrap();
}

/// Metadata without scores is stored; changed metadata replaces every stored score.
pub fn validation_meta_only_and_meta_change(open: Open<'_>) {
    let s = open();
    let run = &run_name("val-meta");
    let only = ValidationScores::new(meta());
    s.store_validation_iteration_scores(run, &only).unwrap();
    assert_scores(&*open(), run, &only, "metadata only");
    s.store_validation_iteration_scores(run, &sample_scores())
        .unwrap();
    let mut m = meta();
    m.datasets.push("val1".into());
    m.parameters[1].values.insert("min_size".into(), 4.0);
    let mut changed = ValidationScores::new(m.clone());
    changed
        .add_iteration_scores(iter_scores(100, [[0.1, 0.2], [0.3, 0.4]]))
        .unwrap();
    s.store_validation_iteration_scores(run, &changed).unwrap();
    assert_scores(&*s, run, &changed, "metadata changed");
    assert_scores(&*open(), run, &changed, "metadata changed, new handle");
    // Same scores, metadata changed back: rewritten under the old metadata.
    let mut back = ValidationScores::new(meta());
    back.add_iteration_scores(iter_scores(100, [[0.1, 0.2], [0.3, 0.4]]))
        .unwrap();
    open()
        .store_validation_iteration_scores(run, &back)
        .unwrap();
    assert_scores(&*s, run, &back, "metadata changed back");
}

/// Scores of an iteration between stored ones are stored (iterations stay ordered).
pub fn validation_inserted_in_the_middle(open: Open<'_>) {
    let s = open();
    let run = &run_name("val-middle");
    let mut v = ValidationScores::new(meta());
    for it in [100, 300] {
        v.add_iteration_scores(iter_scores(it, [[0.5; 2]; 2]))
            .unwrap();
    }
    s.store_validation_iteration_scores(run, &v).unwrap();
    v.add_iteration_scores(iter_scores(200, [[0.7; 2]; 2]))
        .unwrap();
    v.add_iteration_scores(iter_scores(400, [[0.9; 2]; 2]))
        .unwrap();
    s.store_validation_iteration_scores(run, &v).unwrap();
    assert_scores(&*open(), run, &v, "inserted in the middle");
    assert_eq!(
        s.retrieve_validation_iteration_scores(run)
            .unwrap()
            .scores()
            .iter()
            .map(|x| x.iteration)
            .collect::<Vec<_>>(),
        vec![100, 200, 300, 400]
    );
}

/// Tables that lack some values, or are empty at any level, read back as stored.
pub fn validation_sparse_and_empty_tables(open: Open<'_>) {
    let s = open();
    let run = &run_name("val-sparse");
    let mut m = meta();
    m.datasets.push("val1".into());
    let mut v = ValidationScores::new(m);
    let mut sparse = iter_scores(10, [[0.1, 0.2], [0.3, 0.4]]);
    if let Some(per_param) = sparse.scores.get_mut("val0") {
        per_param.get_mut("threshold=0.50").map(|c| c.remove("voi"));
        per_param.insert("threshold=0.25".into(), Default::default());
    }
    sparse.scores.insert("val1".into(), Default::default());
    v.add_iteration_scores(sparse).unwrap();
    v.add_iteration_scores(ValidationIterationScores {
        iteration: 20,
        scores: Default::default(),
    })
    .unwrap();
    let mut one = iter_scores(30, [[0.5; 2]; 2]);
    one.scores.insert(
        "val1".into(),
        [(
            "threshold=0.25".to_owned(),
            [("dice".to_owned(), Score(1.0))].into(),
        )]
        .into(),
    );
    v.add_iteration_scores(one).unwrap();
    s.store_validation_iteration_scores(run, &v).unwrap();
    let back = open().retrieve_validation_iteration_scores(run).unwrap();
    assert!(same_scores(&back, &v), "stored\n{v:?}\nread back\n{back:?}");
    assert_eq!(back.scores()[1].scores.len(), 0, "empty iteration");
}

/// Random add/cut back/store/reopen sequences of validations read back exactly.
pub fn validation_random_sequences(open: Open<'_>) {
    for seed in 0..12u64 {
        let run = run_name(&format!("val-random-{seed}"));
        let mut rng = Rng::new(seed + 100);
        let mut s = open();
        let mut mem = ValidationScores::new(meta());
        let mut next = 0u64;
        for _ in 0..(1 + rng.below(20)) {
            match rng.below(8) {
                0..=2 => {
                    for _ in 0..rng.below(6) {
                        next = next.max(mem.validated_until()) + 10;
                        let mut x = || rng.any_f64();
                        let values = [[x(), x()], [x(), x()]];
                        mem.add_iteration_scores(iter_scores(next, values)).unwrap();
                    }
                }
                3 => {
                    let back = rng.below(5) * 10;
                    mem.delete_after(mem.validated_until().saturating_sub(back));
                    next = mem.validated_until();
                }
                4..=6 => {
                    s.store_validation_iteration_scores(&run, &mem).unwrap();
                    assert_scores(&*s, &run, &mem, &format!("random sequence {seed}"));
                }
                _ => s = open(),
            }
        }
    }
}

/// Storing or deleting one run leaves every other run as it was.
pub fn runs_are_independent(open: Open<'_>) {
    let s = open();
    let (a, b) = (&run_name("indep-a"), &run_name("indep-b"));
    s.store_training_stats(a, &stats(0..20, 0)).unwrap();
    s.store_training_stats(b, &stats(0..10, 1)).unwrap();
    s.store_validation_iteration_scores(a, &sample_scores())
        .unwrap();
    s.store_training_stats(a, &stats(0..5, 2)).unwrap();
    s.delete_training_stats(a).unwrap();
    assert_training(&*s, b, &stats(0..10, 1), "other run after a delete");
    assert!(s.retrieve_training_stats(a).unwrap().is_empty());
    let empty = s.retrieve_validation_iteration_scores(b).unwrap();
    assert_eq!(empty, ValidationScores::default(), "no scores stored for b");
    // Names that are prefixes of one another are different runs.
    s.store_training_stats(&run_name("indep-b.1"), &stats(0..3, 5))
        .unwrap();
    assert_training(&*open(), b, &stats(0..10, 1), "prefix-named run");
    assert_training(
        &*open(),
        &run_name("indep-b.1"),
        &stats(0..3, 5),
        "prefix-named run",
    );
}

/// Deleting a run's validation scores leaves no scores and no metadata, from this handle and
/// a new one, keeps its training stats, and is not an error when there is nothing to delete;
/// the run can then be validated again.
pub fn validation_delete(open: Open<'_>) {
    let s = open();
    let run = &run_name("val-delete");
    s.delete_validation_scores(run).unwrap();
    let training = stats(0..5, 0);
    s.store_training_stats(run, &training).unwrap();
    s.store_validation_iteration_scores(run, &sample_scores())
        .unwrap();
    s.delete_validation_scores(run).unwrap();
    for handle in [&*s, &*open()] {
        assert_scores(handle, run, &ValidationScores::default(), "after deleting");
        assert_training(handle, run, &training, "after deleting the scores");
    }
    s.delete_validation_scores(run).unwrap();
    s.store_validation_iteration_scores(run, &sample_scores())
        .unwrap();
    assert_scores(
        &*open(),
        run,
        &sample_scores(),
        "stored again after deleting",
    );
}

/// Eight writers on eight runs at once (one shared handle), each storing every few
/// iterations, while readers on other handles only ever see a consistent prefix.
pub fn concurrent_writers_and_readers(open: Open<'_>) {
    const RUNS: u64 = 8;
    const ITERATIONS: u64 = 300;
    let writer: Arc<dyn StatsStore> = Arc::from(open());
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let mut writers = Vec::new();
        for r in 0..RUNS {
            let writer = Arc::clone(&writer);
            writers.push(scope.spawn(move || {
                let run = run_name(&format!("concurrent-{r}"));
                let mut st = TrainingStats::new();
                let mut scores = ValidationScores::new(meta());
                for i in 0..ITERATIONS {
                    st.add_iteration_stats(rec(i, r)).unwrap();
                    if (i + 1) % (1 + r) == 0 {
                        writer.store_training_stats(&run, &st).unwrap();
                    }
                    if (i + 1) % 100 == 0 {
                        scores
                            .add_iteration_scores(iter_scores(i + 1, [[r as f64; 2]; 2]))
                            .unwrap();
                        writer
                            .store_validation_iteration_scores(&run, &scores)
                            .unwrap();
                    }
                }
                writer.store_training_stats(&run, &st).unwrap();
            }));
        }
        for reader in 0..2u64 {
            let reader_store = open();
            let done = Arc::clone(&done);
            scope.spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) || reads < 4 {
                    let r = (reads + reader) % RUNS;
                    let run = run_name(&format!("concurrent-{r}"));
                    let got = reader_store.retrieve_training_stats(&run).unwrap();
                    let expected = stats(0..got.len() as u64, r);
                    assert!(
                        same_stats(&got, &expected),
                        "reader saw an inconsistent state of `{run}`: {:?}",
                        got.iteration_stats()
                    );
                    let v = reader_store
                        .retrieve_validation_iteration_scores(&run)
                        .unwrap();
                    for (k, x) in v.scores().iter().enumerate() {
                        assert_eq!(x, &iter_scores(100 * (k as u64 + 1), [[r as f64; 2]; 2]));
                    }
                    reads += 1;
                }
            });
        }
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    let fresh = open();
    for r in 0..RUNS {
        let run = run_name(&format!("concurrent-{r}"));
        assert_training(
            &*fresh,
            &run,
            &stats(0..ITERATIONS, r),
            "after concurrent writes",
        );
        assert_eq!(
            fresh
                .retrieve_validation_iteration_scores(&run)
                .unwrap()
                .scores()
                .len(),
            (ITERATIONS / 100) as usize
        );
    }
}

/// Readers of a run's validation scores, while its first validation is stored and while its
/// validation metadata is replaced (every score rewritten), always see a whole state: no
/// scores, metadata without scores, or one of the stored states; never an error.
///
/// Repeated over many runs, with readers polling the run being written, so that a store
/// whose readers can see a half-written state fails this check reliably (FileStatsStore
/// once read `meta.json` before and `scores.jsonl` after a first validation was stored, and
/// reported "meta.json is missing but scores.jsonl has scores").
pub fn readers_see_whole_validations(open: Open<'_>) {
    const RUNS: usize = 150;
    let writer = open();
    let first = {
        let mut v = ValidationScores::new(meta());
        v.add_iteration_scores(iter_scores(2, [[0.5, 1.0], [0.6, 2.0]]))
            .unwrap();
        v
    };
    let mut second = first.clone();
    second
        .add_iteration_scores(iter_scores(4, [[0.7, 0.5], [0.8, 0.4]]))
        .unwrap();
    let mut other_meta = meta();
    other_meta.parameters.truncate(1);
    other_meta.criteria.truncate(1);
    let mut replaced = ValidationScores::new(other_meta.clone());
    let mut one = iter_scores(6, [[0.9, 0.0], [0.0, 0.0]]);
    for per_param in one.scores.values_mut() {
        per_param.retain(|p, _| p == "threshold=0.25");
        for per_crit in per_param.values_mut() {
            per_crit.retain(|c, _| c == "dice");
        }
    }
    replaced.add_iteration_scores(one).unwrap();
    let stored = [first, second, replaced];
    // Whole states: nothing yet, metadata without scores yet (a store may write the two in
    // separate steps), or one of the stored states.
    let mut states = vec![
        ValidationScores::default(),
        ValidationScores::new(meta()),
        ValidationScores::new(other_meta),
    ];
    states.extend(stored.iter().cloned());
    let current = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let failures = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let reader = open();
                let (current, done, states) = (&current, &done, &states);
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    while !done.load(Ordering::Acquire) {
                        let run = run_name(&format!("race-{}", current.load(Ordering::Acquire)));
                        match reader.retrieve_validation_iteration_scores(&run) {
                            Ok(v) if states.iter().any(|s| same_scores(s, &v)) => {}
                            Ok(v) => failures.push(format!("`{run}` read as {v:?}")),
                            Err(e) => failures.push(format!("`{run}`: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        for r in 0..RUNS {
            current.store(r, Ordering::Release);
            let run = run_name(&format!("race-{r}"));
            for state in &stored {
                writer
                    .store_validation_iteration_scores(&run, state)
                    .unwrap_or_else(|e| panic!("storing the validations of `{run}`: {e}"));
            }
        }
        done.store(true, Ordering::Release);
        readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(
        failures.is_empty(),
        "{} reads saw a half-stored validation, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}
