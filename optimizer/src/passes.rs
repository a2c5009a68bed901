//! The backward passes the guard saw, recognised by their gradient tensors, so
//! that a `GradStore` applied again (A, then B, then A) is known for what it
//! is. Bounded: the last [`REMEMBERED_PASSES`] passes, one tensor id per
//! parameter each.

use std::collections::{HashMap, VecDeque};

use candle_core::TensorId;

use crate::ledger::Generation;

/// How many of the latest backward passes the guard can recognise.
pub const REMEMBERED_PASSES: usize = 64;

#[derive(Debug, Clone)]
struct Pass {
    generation: Generation,
    ids: Vec<TensorId>,
    /// A step applied this pass.
    applied: bool,
    /// How many times the pass is in the guard's buffers (added since the
    /// last reset).
    buffered: u32,
}

/// The latest passes, by the ids of their gradient tensors.
#[derive(Debug, Clone, Default)]
pub(crate) struct PassMemory {
    by_id: HashMap<TensorId, Generation>,
    passes: VecDeque<Pass>,
}

impl PassMemory {
    fn position(&self, generation: Generation) -> Option<usize> {
        self.passes
            .binary_search_by_key(&generation, |p| p.generation)
            .ok()
    }

    /// The pass that made gradient tensor `id`, and whether a step applied it.
    pub fn lookup(&self, id: TensorId) -> Option<(Generation, bool)> {
        let generation = *self.by_id.get(&id)?;
        let pass = &self.passes[self.position(generation)?];
        Some((generation, pass.applied))
    }

    /// Remembers a new pass (generations only grow), forgetting the oldest
    /// beyond [`REMEMBERED_PASSES`].
    pub fn remember(&mut self, generation: Generation, ids: Vec<TensorId>, applied: bool) {
        for &id in &ids {
            self.by_id.insert(id, generation);
        }
        self.passes.push_back(Pass {
            generation,
            ids,
            applied,
            buffered: u32::from(!applied),
        });
        while self.passes.len() > REMEMBERED_PASSES {
            if let Some(old) = self.passes.pop_front() {
                for id in old.ids {
                    if self.by_id.get(&id) == Some(&old.generation) {
                        self.by_id.remove(&id);
                    }
                }
            }
        }
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
}
