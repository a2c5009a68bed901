//! The backward passes the guard saw, recognised by their gradient tensors, so
//! that a `GradStore` applied again (A, then B, then A) is known for what it
//! is. Bounded: the last [`REMEMBERED_PASSES`] passes, one tensor id per
//! parameter each.
//!
//! Cheap on the hot path: candle numbers tensors from one counter, so a
//! gradient younger than every gradient the guard has seen is new without a
//! look-up, which is every gradient of a fresh backward pass. Only a tensor
//! at least as old as that (a store given again) is searched for, by
//! parameter index, among the remembered passes.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use candle_core::TensorId;

use crate::ledger::Generation;

/// How many of the latest backward passes the guard can recognise.
pub const REMEMBERED_PASSES: usize = 64;

#[derive(Debug, Clone)]
struct Pass {
    generation: Generation,
    /// The pass's gradient of each parameter it reached: parameter index and
    /// tensor id, ascending by index.
    ids: Vec<(u32, TensorId)>,
    /// The oldest and youngest of those ids (their counter values).
    oldest: usize,
    youngest: usize,
    /// A step applied this pass.
    applied: bool,
    /// How many times the pass is in the guard's buffers (added since the
    /// last reset).
    buffered: u32,
}

/// The latest passes, by the ids of their gradient tensors.
#[derive(Debug, Clone, Default)]
pub(crate) struct PassMemory {
    /// The youngest gradient id remembered so far: younger ones are new.
    youngest: Option<usize>,
    passes: VecDeque<Pass>,
}

/// The counter value behind a `TensorId` (candle gives ids from one global
/// counter, so a larger value is a younger tensor). `TensorId` keeps its
/// number private but hashes exactly it, so a hasher that records the value
/// reads it without a lookup table. Should candle ever hash something else,
/// every value reads 0: no tensor is then younger than another, and every
/// gradient goes through the exact search (slower, still correct).
pub(crate) fn counter_value(id: TensorId) -> usize {
    #[derive(Default)]
    struct Reader(usize);
    impl Hasher for Reader {
        fn finish(&self) -> u64 {
            self.0 as u64
        }
        fn write(&mut self, _: &[u8]) {}
        fn write_usize(&mut self, n: usize) {
            self.0 = n;
        }
    }
    let mut reader = Reader::default();
    id.hash(&mut reader);
    reader.0
}

impl PassMemory {
    fn position(&self, generation: Generation) -> Option<usize> {
        self.passes
            .binary_search_by_key(&generation, |p| p.generation)
            .ok()
    }

    /// The pass that made gradient `id` of parameter `param`, and whether a
    /// step applied it; `None` for a gradient the guard never saw.
    pub fn lookup(&self, param: usize, id: TensorId) -> Option<(Generation, bool)> {
        let youngest = self.youngest?;
        let n = counter_value(id);
        if n > youngest {
            return None;
        }
        let param = param as u32;
        self.passes
            .iter()
            .rev()
            .filter(|p| (p.oldest..=p.youngest).contains(&n))
            .find(|p| {
                p.ids
                    .binary_search_by_key(&param, |(i, _)| *i)
                    .is_ok_and(|k| p.ids[k].1 == id)
            })
            .map(|p| (p.generation, p.applied))
    }

    /// Remembers a new pass (generations only grow), forgetting the oldest
    /// beyond [`REMEMBERED_PASSES`]; the forgotten pass's list is reused.
    pub fn remember(
        &mut self,
        generation: Generation,
        ids: impl Iterator<Item = (usize, TensorId)>,
        applied: bool,
    ) {
        let reused = self.passes.len() >= REMEMBERED_PASSES;
        let mut list = if reused {
            self.passes.pop_front().map(|p| p.ids).unwrap_or_default()
        } else {
            Vec::new()
        };
        list.clear();
        let (mut oldest, mut youngest) = (usize::MAX, 0);
        for (i, id) in ids {
            let n = counter_value(id);
            oldest = oldest.min(n);
            youngest = youngest.max(n);
            list.push((i as u32, id));
        }
        if !reused {
            // A list lives as long as 64 passes: no slack from growing it.
            list.shrink_to_fit();
        }
        if !list.is_empty() {
            self.youngest = Some(self.youngest.map_or(youngest, |y| y.max(youngest)));
        }
        self.passes.push_back(Pass {
            generation,
            ids: list,
            oldest,
            youngest,
            applied,
            buffered: u32::from(!applied),
        });
    }

    /// A known pass was added to the buffers again.
    pub fn buffered(&mut self, generation: Generation) {
        if let Some(i) = self.position(generation) {
            self.passes[i].buffered += 1;
        }
    }

    /// A known pass was applied by a step that brought its own gradients.
    /// Returns how many times it sits in the buffers, not applied before:
    /// those copies are now passes an earlier step applied.
    pub fn applied(&mut self, generation: Generation) -> u32 {
        let Some(i) = self.position(generation) else {
            return 0;
        };
        let pass = &mut self.passes[i];
        let newly = if pass.applied { 0 } else { pass.buffered };
        pass.applied = true;
        newly
    }

    /// A step applied the buffers: every buffered pass is applied.
    pub fn buffers_applied(&mut self) {
        for pass in self.passes.iter_mut().filter(|p| p.buffered > 0) {
            pass.applied = true;
        }
    }

    /// The buffers were reset.
    pub fn buffers_cleared(&mut self) {
        for pass in &mut self.passes {
            pass.buffered = 0;
        }
    }

    /// Bytes held, for the guard's memory report.
    pub fn bytes(&self) -> usize {
        let per_id = std::mem::size_of::<(u32, TensorId)>();
        self.passes.capacity() * std::mem::size_of::<Pass>()
            + self
                .passes
                .iter()
                .map(|p| p.ids.capacity() * per_id)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn ids(n: usize) -> Vec<TensorId> {
        (0..n)
            .map(|_| {
                Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)
                    .unwrap()
                    .id()
            })
            .collect()
    }

    #[test]
    fn younger_tensors_have_larger_counter_values() {
        // The fast path rests on this: if candle changes how a TensorId
        // hashes, this fails and the look-up must be revisited.
        let a = ids(3);
        let values: Vec<usize> = a.iter().map(|&id| counter_value(id)).collect();
        assert!(values[0] > 0 && values[0] < values[1] && values[1] < values[2]);
    }

    #[test]
    fn a_pass_is_recognised_by_parameter_and_id_until_forgotten() {
        let mut m = PassMemory::default();
        let first = ids(2);
        m.remember(1, first.iter().copied().enumerate(), true);
        assert_eq!(m.lookup(0, first[0]), Some((1, true)));
        assert_eq!(m.lookup(1, first[1]), Some((1, true)));
        // The same tensor under another parameter is not that pass.
        assert_eq!(m.lookup(1, first[0]), None);
        let later = ids(1);
        assert_eq!(m.lookup(0, later[0]), None);
        for g in 2..=REMEMBERED_PASSES as u64 {
            m.remember(g, ids(2).into_iter().enumerate(), false);
        }
        assert_eq!(m.lookup(0, first[0]), Some((1, true)));
        m.remember(
            REMEMBERED_PASSES as u64 + 1,
            ids(2).into_iter().enumerate(),
            false,
        );
        assert_eq!(m.lookup(0, first[0]), None);
    }

    #[test]
    fn an_older_unseen_tensor_is_new() {
        let older = ids(1);
        let mut m = PassMemory::default();
        m.remember(1, ids(1).into_iter().enumerate(), false);
        assert_eq!(m.lookup(0, older[0]), None);
    }
}
