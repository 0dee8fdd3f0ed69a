//! A fast, deterministic hasher for integer keys (the FxHash multiply-rotate step).
//!
//! The agglomerations hash millions of integer ids, where SipHash dominates the run time. The
//! hasher has no random state, so iteration orders are the same in every run.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The FxHash hasher.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A hash map with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
