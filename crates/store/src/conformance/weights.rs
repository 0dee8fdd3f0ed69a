//! Checks of [`WeightsStore`] semantics (the contract of `LocalWeightsStore`, DESIGN.md),
//! through the trait only: nothing here knows a layout.

use dacapo_core::{CoreError, DType, NamedTensor, TensorMap};

use super::data::{best, run_name, weights, weights_sized};
use crate::error::StoreError;
use crate::traits::{TrainState, Weights, WeightsStore};

type Open<'a> = &'a dyn Fn() -> Box<dyn WeightsStore>;

/// Every dtype, scalars and empty tensors round trip; the stored checkpoint is the latest.
pub fn round_trip_all_dtypes(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-dtypes");
    let mut w = weights(100);
    for (name, dtype, shape) in [
        ("scalar", DType::F64, vec![]),
        ("empty", DType::F32, vec![0, 3]),
        ("half", DType::F16, vec![3]),
        ("brain", DType::BF16, vec![2, 1]),
        ("mask", DType::Bool, vec![4]),
        ("idx", DType::U32, vec![2]),
        ("i8", DType::I8, vec![5]),
    ] {
        let n: usize = shape.iter().product::<usize>() * dtype.size();
        let data = (0..n).map(|i| (i * 37 % 251) as u8).collect();
        w.model
            .insert(name.into(), NamedTensor::new(dtype, shape, data).unwrap());
    }
    assert_eq!(s.latest_iteration(run).unwrap(), None);
    s.store_weights(run, 100, &w).unwrap();
    assert_eq!(s.latest_iteration(run).unwrap(), Some(100));
    assert_eq!(s.retrieve_weights(run, 100).unwrap(), w);
    assert_eq!(s.retrieve_state(run, 100).unwrap(), w.state);
    assert_eq!(s.retrieve_state(run, 100).unwrap().device, "cpu");
    assert_eq!(s.iterations(run).unwrap(), vec![100]);
    let fresh = open();
    assert_eq!(fresh.latest_iteration(run).unwrap(), Some(100));
    assert_eq!(fresh.retrieve_weights(run, 100).unwrap(), w);
}

/// Missing runs, iterations and best records: `None`, empty lists and
/// [`StoreError::NotFound`] naming the checkpoint.
pub fn missing_run_and_iteration(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-missing");
    assert_eq!(s.latest_iteration(run).unwrap(), None);
    assert_eq!(s.iterations(run).unwrap(), Vec::<u64>::new());
    let err = s.retrieve_weights(run, 5).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("checkpoint 5 of run `{run}`")),
        "{err}"
    );
    assert!(matches!(
        s.retrieve_state(run, 5),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(s.remove(run, 5), Err(StoreError::NotFound { .. })));
    assert!(matches!(
        s.retrieve_best(run, "val0", "dice"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.apply_retention(run, 2).unwrap(), Vec::<u64>::new());
    s.store_weights(run, 10, &weights(10)).unwrap();
    let err = s.retrieve_weights(run, 20).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("checkpoint 20 of run `{run}`")),
        "{err}"
    );
    assert!(matches!(
        s.remove(run, 20),
        Err(StoreError::NotFound { .. })
    ));
}

/// Storing an iteration again is `Ok` when byte-identical and [`StoreError::Exists`]
/// otherwise, from this handle and a new one; the stored content is unchanged.
pub fn duplicate_iteration_is_idempotent_or_an_error(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-duplicate");
    s.store_weights(run, 10, &weights(10)).unwrap();
    s.store_weights(run, 10, &weights(10)).unwrap();
    let mut other = weights(10);
    other.state.seed = 7;
    let err = s.store_weights(run, 10, &other).unwrap_err();
    assert!(
        matches!(err, StoreError::Exists { iteration: 10, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(s.retrieve_weights(run, 10).unwrap(), weights(10));
    let s2 = open();
    s2.store_weights(run, 10, &weights(10)).unwrap();
    let mut other_tensor = weights(10);
    if let Some(t) = other_tensor.model.get_mut("conv.bias") {
        t.data[0] ^= 1;
    }
    assert!(matches!(
        s2.store_weights(run, 10, &other_tensor),
        Err(StoreError::Exists { .. })
    ));
    assert_eq!(s2.retrieve_weights(run, 10).unwrap(), weights(10));
}

/// A state whose iteration differs, inconsistent tensors and reserved tensor names are
/// rejected and leave no checkpoint.
pub fn invalid_weights_are_rejected(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-invalid");
    let err = s.store_weights(run, 11, &weights(10)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let mut w = weights(10);
    w.model.get_mut("conv.bias").unwrap().data.pop();
    let err = s.store_weights(run, 10, &w).unwrap_err();
    assert!(err.to_string().contains("conv.bias"), "{err}");
    let mut w = weights(10);
    w.optimizer.insert(
        "__metadata__".into(),
        NamedTensor::from_f32(vec![1], &[1.0]).unwrap(),
    );
    assert!(matches!(
        s.store_weights(run, 10, &w),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.latest_iteration(run).unwrap(), None);
    assert_eq!(open().iterations(run).unwrap(), Vec::<u64>::new());
}

/// Invalid run, dataset and criterion names are rejected with
/// [`CoreError::InvalidName`]; reserved dataset names are rejected as such.
pub fn invalid_names_are_rejected(open: Open<'_>) {
    let s = open();
    let is_name_err = |r: Result<(), StoreError>| {
        matches!(r, Err(StoreError::Core(CoreError::InvalidName { .. })))
    };
    // Run names cannot be invalid: a `RunName` is checked when it is made.
    let run = &run_name("w-names");
    for bad in ["../x", "/abs", ".", "", "..", "a/b", ".hidden"] {
        assert!(dacapo_core::RunName::new(bad).is_err(), "{bad:?}");
        assert!(
            is_name_err(s.retrieve_best(run, bad, "c").map(|_| ())),
            "{bad:?}"
        );
        assert!(
            is_name_err(s.retrieve_best(run, "d", bad).map(|_| ())),
            "{bad:?}"
        );
        assert!(is_name_err(s.remove_best(run, bad, "c")), "{bad:?}");
    }
    s.store_weights(run, 1, &weights(1)).unwrap();
    for bad in ["../x", "/abs", ".", ""] {
        let r = s.store_best(run, &best(1, bad, "dice", 0.5));
        assert!(matches!(r, Err(StoreError::Core(_))), "{bad:?}");
        let r = s.store_best(run, &best(1, "val0", bad, 0.5));
        assert!(matches!(r, Err(StoreError::Core(_))), "{bad:?}");
    }
    for reserved in dacapo_core::RESERVED_DATASET_NAMES {
        let err = s
            .store_best(run, &best(1, reserved, "dice", 0.5))
            .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{reserved}: {err}");
    }
}

/// `best_records` lists every stored record in (dataset, criterion) order, from this handle
/// and a new one; `remove_best` deletes one (and is no error when it is gone) and leaves the
/// checkpoint it pointed to.
pub fn best_records_are_listed_and_removed(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-best-list");
    assert!(s.best_records(run).unwrap().is_empty());
    for n in [10, 20] {
        s.store_weights(run, n, &weights(n)).unwrap();
    }
    let records = [
        best(20, "val1", "dice", 0.5),
        best(10, "val0", "voi", 0.25),
        best(20, "val0", "dice", 0.75),
    ];
    for r in &records {
        s.store_best(run, r).unwrap();
    }
    let sorted = vec![records[2].clone(), records[1].clone(), records[0].clone()];
    assert_eq!(s.best_records(run).unwrap(), sorted);
    assert_eq!(open().best_records(run).unwrap(), sorted);
    s.remove_best(run, "val0", "voi").unwrap();
    s.remove_best(run, "val0", "voi").unwrap();
    assert_eq!(
        open().best_records(run).unwrap(),
        vec![records[2].clone(), records[0].clone()]
    );
    assert!(matches!(
        s.retrieve_best(run, "val0", "voi"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.iterations(run).unwrap(), [10, 20]);
}

/// Removing checkpoints moves the latest back; storing an older one does not.
pub fn remove_updates_latest(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-remove");
    for n in [10, 20, 30] {
        s.store_weights(run, n, &weights(n)).unwrap();
    }
    s.remove(run, 20).unwrap();
    assert_eq!(s.iterations(run).unwrap(), vec![10, 30]);
    assert!(matches!(
        s.retrieve_weights(run, 20),
        Err(StoreError::NotFound { .. })
    ));
    s.remove(run, 30).unwrap();
    assert_eq!(s.latest_iteration(run).unwrap(), Some(10));
    assert_eq!(open().latest_iteration(run).unwrap(), Some(10));
    s.remove(run, 10).unwrap();
    assert_eq!(s.latest_iteration(run).unwrap(), None);
    s.store_weights(run, 50, &weights(50)).unwrap();
    s.store_weights(run, 40, &weights(40)).unwrap();
    assert_eq!(s.latest_iteration(run).unwrap(), Some(50));
    assert_eq!(open().iterations(run).unwrap(), vec![40, 50]);
}

/// Best records need a committed checkpoint, round trip (infinite values included), are
/// overwritten by a new record and are [`StoreError::NotFound`] when absent.
pub fn best_records(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-best");
    let err = s
        .store_best(run, &best(10, "val0", "dice", 0.9))
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("committed"), "{err}");
    s.store_weights(run, 10, &weights(10)).unwrap();
    s.store_weights(run, 20, &weights(20)).unwrap();
    s.store_best(run, &best(10, "val0", "dice", 0.9)).unwrap();
    s.store_best(run, &best(20, "val0", "voi", f64::INFINITY))
        .unwrap();
    assert_eq!(
        open().retrieve_best(run, "val0", "dice").unwrap(),
        best(10, "val0", "dice", 0.9)
    );
    assert_eq!(
        s.retrieve_best(run, "val0", "voi").unwrap().value,
        f64::INFINITY
    );
    s.store_best(run, &best(20, "val0", "dice", 0.95)).unwrap();
    assert_eq!(
        open().retrieve_best(run, "val0", "dice").unwrap(),
        best(20, "val0", "dice", 0.95)
    );
    assert!(matches!(
        s.retrieve_best(run, "val1", "dice"),
        Err(StoreError::NotFound { .. })
    ));
}

/// Retention keeps the newest `keep_last` (at least one) and every best checkpoint.
pub fn retention_keeps_newest_and_best(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-retention");
    for n in 1..=10 {
        s.store_weights(run, n * 10, &weights(n * 10)).unwrap();
    }
    s.store_best(run, &best(30, "val0", "dice", 0.9)).unwrap();
    s.store_best(run, &best(50, "val1", "voi", 0.1)).unwrap();
    assert_eq!(
        s.apply_retention(run, 2).unwrap(),
        vec![10, 20, 40, 60, 70, 80]
    );
    assert_eq!(open().iterations(run).unwrap(), vec![30, 50, 90, 100]);
    assert_eq!(s.latest_iteration(run).unwrap(), Some(100));
    assert_eq!(s.apply_retention(run, 0).unwrap(), vec![90]);
    assert_eq!(s.iterations(run).unwrap(), vec![30, 50, 100]);
    assert_eq!(s.apply_retention(run, 5).unwrap(), Vec::<u64>::new());
    assert_eq!(s.retrieve_weights(run, 30).unwrap(), weights(30));
}

/// A checkpoint of about 12 MB and one without tensors round trip.
pub fn large_and_empty_checkpoints(open: Open<'_>) {
    let s = open();
    let run = &run_name("w-large");
    let w = weights_sized(5, 1 << 20);
    s.store_weights(run, 5, &w).unwrap();
    assert_eq!(open().retrieve_weights(run, 5).unwrap(), w);
    let empty = Weights {
        model: TensorMap::new(),
        optimizer: TensorMap::new(),
        state: TrainState::new(6, "", "flex", 0),
    };
    s.store_weights(run, 6, &empty).unwrap();
    assert_eq!(s.retrieve_weights(run, 6).unwrap(), empty);
    assert_eq!(s.latest_iteration(run).unwrap(), Some(6));
}

/// Four runs written at once through one handle each keep their own checkpoints.
pub fn concurrent_runs(open: Open<'_>) {
    let shared: std::sync::Arc<dyn WeightsStore> = std::sync::Arc::from(open());
    std::thread::scope(|scope| {
        for r in 0..4u64 {
            let s = std::sync::Arc::clone(&shared);
            scope.spawn(move || {
                let run = run_name(&format!("w-concurrent-{r}"));
                for n in 1..=3u64 {
                    let it = n * 10 + r;
                    s.store_weights(&run, it, &weights(it)).unwrap();
                }
            });
        }
    });
    let s = open();
    for r in 0..4u64 {
        let run = run_name(&format!("w-concurrent-{r}"));
        assert_eq!(s.iterations(&run).unwrap(), vec![10 + r, 20 + r, 30 + r]);
        assert_eq!(s.retrieve_weights(&run, 30 + r).unwrap(), weights(30 + r));
    }
}
