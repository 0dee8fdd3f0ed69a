//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use dacapo_core::{
    Criterion, DType, NamedTensor, ParameterSet, Score, TensorMap, TrainingIterationStats,
    TrainingStats, ValidationIterationScores, ValidationMeta,
};
use dacapo_store::{TrainState, Weights};

/// Deterministic pseudo-random f32 values from a seed.
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A small checkpoint whose content is a function of `iteration` only.
pub fn weights(iteration: u64) -> Weights {
    weights_sized(iteration, 64)
}

/// A checkpoint with tensors of about `n` elements, content a function of `iteration`.
pub fn weights_sized(iteration: u64, n: usize) -> Weights {
    let mut model = TensorMap::new();
    model.insert(
        "conv.weight".into(),
        NamedTensor::from_f32(vec![n / 4, 2, 2], &values(iteration, n / 4 * 4)).unwrap(),
    );
    model.insert(
        "conv.bias".into(),
        NamedTensor::from_f32(vec![3], &values(iteration + 1, 3)).unwrap(),
    );
    model.insert(
        "bn.num_batches_tracked".into(),
        NamedTensor::from_i64(vec![], &[iteration as i64]).unwrap(),
    );
    let mut optimizer = TensorMap::new();
    optimizer.insert(
        "conv.weight.exp_avg".into(),
        NamedTensor::from_f32(vec![n], &values(iteration + 2, n)).unwrap(),
    );
    optimizer.insert(
        "conv.weight.exp_avg_sq".into(),
        NamedTensor::from_f32(vec![n], &values(iteration + 3, n)).unwrap(),
    );
    optimizer.insert(
        "step".into(),
        NamedTensor::new(DType::U8, vec![2], vec![iteration as u8, 1]).unwrap(),
    );
    let mut state = TrainState::new(iteration, "cfg-abc", "flex", 42);
    state
        .extra
        .insert("lr".into(), serde_json::json!(0.1 + iteration as f64 / 3.0));
    Weights {
        model,
        optimizer,
        state,
    }
}

/// Training record whose values depend on `iteration` and a generation.
pub fn rec(iteration: u64, generation: u64) -> TrainingIterationStats {
    TrainingIterationStats {
        iteration,
        loss: 1.0 / (iteration as f64 + 1.0) + generation as f64 * 1e-3,
        time: 0.1 + iteration as f64 / 7.0,
    }
}

/// Training stats for `range` of generation `g`.
pub fn stats(range: std::ops::Range<u64>, generation: u64) -> TrainingStats {
    TrainingStats::from_records(range.map(|i| rec(i, generation))).unwrap()
}

/// NaN-aware, bit-exact equality of training stats.
pub fn same_stats(a: &TrainingStats, b: &TrainingStats) -> bool {
    let same = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
    a.len() == b.len()
        && a.iteration_stats()
            .iter()
            .zip(b.iteration_stats())
            .all(|(x, y)| {
                x.iteration == y.iteration && same(x.loss, y.loss) && same(x.time, y.time)
            })
}

/// Validation metadata: one dataset, two parameter sets, dice (higher) and voi (lower).
pub fn meta() -> ValidationMeta {
    let param = |t: f64| ParameterSet {
        id: format!("threshold={t:.2}"),
        values: BTreeMap::from([("threshold".to_owned(), t)]),
    };
    ValidationMeta {
        parameters: vec![param(0.25), param(0.5)],
        datasets: vec!["val0".into()],
        criteria: vec![Criterion::new("dice", true), Criterion::new("voi", false)],
    }
}

/// Scores of one iteration, values[param][criterion].
pub fn iter_scores(iteration: u64, values: [[f64; 2]; 2]) -> ValidationIterationScores {
    let mut per_param = BTreeMap::new();
    for (p, pid) in ["threshold=0.25", "threshold=0.50"].iter().enumerate() {
        per_param.insert(
            (*pid).to_owned(),
            BTreeMap::from([
                ("dice".to_owned(), Score(values[p][0])),
                ("voi".to_owned(), Score(values[p][1])),
            ]),
        );
    }
    ValidationIterationScores {
        iteration,
        scores: BTreeMap::from([("val0".to_owned(), per_param)]),
    }
}
