//! Deterministic test values for the conformance checks (and for stores' own tests).

use std::collections::BTreeMap;

use dacapo_core::{
    Criterion, DType, NamedTensor, ParameterSet, RunName, Score, TensorMap, TrainingIterationStats,
    TrainingStats, ValidationIterationScores, ValidationMeta, ValidationScores,
};

use crate::traits::{BestRecord, TrainState, Weights};

/// `name` as a run name (the checks use valid names only).
pub fn run_name(name: &str) -> RunName {
    RunName::new(name).unwrap_or_else(|e| panic!("test run name: {e}"))
}

/// Deterministic pseudo-random f32 values in [-0.5, 0.5) from a seed (xorshift).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect()
}

/// A small deterministic random number generator (xorshift64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An f64 that is often special: NaN, ±inf, ±0, subnormal, extreme or any bit pattern.
    pub fn any_f64(&mut self) -> f64 {
        match self.below(10) {
            0 => f64::NAN,
            1 => [
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
                0.0,
                1e-320,
                f64::MAX,
            ][self.below(6) as usize],
            _ => {
                let v = f64::from_bits(self.next_u64());
                if v.is_nan() { 0.25 } else { v }
            }
        }
    }
}

/// A checkpoint of `iteration` whose content depends on `iteration` only.
pub fn weights(iteration: u64) -> Weights {
    weights_sized(iteration, 64)
}

/// A checkpoint of `iteration` with tensors of about `n` elements (`n >= 4`).
pub fn weights_sized(iteration: u64, n: usize) -> Weights {
    // The shapes match the data lengths by construction.
    let tensor = |shape: Vec<usize>, seed: u64| {
        let len = shape.iter().product();
        NamedTensor::from_f32(shape, &values(seed, len))
            .unwrap_or_else(|e| panic!("test tensor: {e}"))
    };
    let mut model = TensorMap::new();
    model.insert("conv.weight".into(), tensor(vec![n / 4, 2, 2], iteration));
    model.insert("conv.bias".into(), tensor(vec![3], iteration + 1));
    model.insert(
        "bn.num_batches_tracked".into(),
        NamedTensor::from_i64(vec![], &[iteration as i64])
            .unwrap_or_else(|e| panic!("test tensor: {e}")),
    );
    let mut optimizer = TensorMap::new();
    optimizer.insert("conv.weight.exp_avg".into(), tensor(vec![n], iteration + 2));
    optimizer.insert(
        "conv.weight.exp_avg_sq".into(),
        tensor(vec![n], iteration + 3),
    );
    optimizer.insert(
        "step".into(),
        NamedTensor::new(DType::U8, vec![2], vec![iteration as u8, 1])
            .unwrap_or_else(|e| panic!("test tensor: {e}")),
    );
    let mut state = TrainState::new(iteration, "cfg-abc", "flex", 42).with_device("cpu");
    state
        .extra
        .insert("lr".into(), serde_json::json!(0.1 + iteration as f64 / 3.0));
    Weights {
        model,
        optimizer,
        state,
    }
}

/// A best record of parameter `threshold=0.50`, higher is better.
pub fn best(iteration: u64, dataset: &str, criterion: &str, value: f64) -> BestRecord {
    BestRecord {
        iteration,
        dataset: dataset.into(),
        criterion: criterion.into(),
        parameter: "threshold=0.50".into(),
        value,
        higher_is_better: true,
    }
}

/// A training record whose values depend on `iteration` and a generation.
pub fn rec(iteration: u64, generation: u64) -> TrainingIterationStats {
    TrainingIterationStats {
        iteration,
        loss: 1.0 / (iteration as f64 + 1.0) + generation as f64 * 1e-3,
        time: 0.1 + iteration as f64 / 7.0,
    }
}

/// Training stats for `range` of generation `generation`.
pub fn stats(range: std::ops::Range<u64>, generation: u64) -> TrainingStats {
    TrainingStats::from_records(range.map(|i| rec(i, generation)))
        .unwrap_or_else(|e| panic!("consecutive records: {e}"))
}

/// Whether two f64 are the same bits (any NaN equals any NaN).
pub fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// NaN-aware, bit-exact equality of training stats.
pub fn same_stats(a: &TrainingStats, b: &TrainingStats) -> bool {
    a.len() == b.len()
        && a.iteration_stats()
            .iter()
            .zip(b.iteration_stats())
            .all(|(x, y)| {
                x.iteration == y.iteration && same_f64(x.loss, y.loss) && same_f64(x.time, y.time)
            })
}

/// NaN-aware, bit-exact equality of validation scores and their metadata (`==` on
/// [`ValidationScores`] treats `-0.0` and `0.0` as equal).
pub fn same_scores(a: &ValidationScores, b: &ValidationScores) -> bool {
    let bits = |v: &ValidationScores| -> Vec<(u64, String, String, String, u64)> {
        v.scores()
            .iter()
            .flat_map(|s| {
                s.scores.iter().flat_map(move |(d, per_param)| {
                    per_param.iter().flat_map(move |(p, per_crit)| {
                        per_crit.iter().map(move |(c, x)| {
                            let b = if x.0.is_nan() { 1 } else { x.0.to_bits() };
                            (s.iteration, d.clone(), p.clone(), c.clone(), b)
                        })
                    })
                })
            })
            .collect()
    };
    a == b && bits(a) == bits(b)
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

/// Scores of one iteration on `val0`, `values[parameter][criterion]`.
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

/// Scores at 100 and 200 with NaN, infinities, -0 and a tiny value.
pub fn sample_scores() -> ValidationScores {
    let mut v = ValidationScores::new(meta());
    for s in [
        iter_scores(100, [[0.5, 2.0], [0.6, f64::NAN]]),
        iter_scores(200, [[f64::INFINITY, f64::NEG_INFINITY], [-0.0, 1e-300]]),
    ] {
        v.add_iteration_scores(s)
            .unwrap_or_else(|e| panic!("sample scores: {e}"));
    }
    v
}
