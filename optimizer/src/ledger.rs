//! The gradient ledger: which backward passes each parameter's gradient holds,
//! and how many of them an earlier step already applied.
//!
//! Pure bookkeeping over integers. Nothing here reads a tensor or touches a
//! device, so keeping the ledger costs the same on CPU and GPU.

/// The number of a backward pass, given by the guard: 1, 2, 3, ...
pub type Generation = u64;

/// The backward passes summed into one gradient since the last reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The oldest pass in the gradient.
    pub first: Generation,
    /// The newest pass in the gradient.
    pub last: Generation,
    /// How many passes were summed.
    pub passes: u32,
    /// How many of those passes an earlier step already applied.
    pub reapplied: u32,
}

impl Held {
    fn one(generation: Generation, applied_before: bool) -> Self {
        Self {
            first: generation,
            last: generation,
            passes: 1,
            reapplied: u32::from(applied_before),
        }
    }

    fn with(self, generation: Generation, applied_before: bool) -> Self {
        Self {
            first: self.first.min(generation),
            last: self.last.max(generation),
            passes: self.passes.saturating_add(1),
            reapplied: self.reapplied.saturating_add(u32::from(applied_before)),
        }
    }

    /// Holds no pass that a step has not applied yet.
    pub fn is_stale(&self) -> bool {
        self.reapplied >= self.passes
    }

    /// Holds new passes together with passes an earlier step applied.
    pub fn reapplies(&self) -> bool {
        self.reapplied > 0 && self.passes > self.reapplied
    }
}

/// What the ledger knows about one parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamEntry {
    /// The passes held by the parameter's current gradient (`None`: no gradient).
    pub held: Option<Held>,
    /// The newest pass a step applied to this parameter.
    pub applied: Option<Generation>,
    /// Whether the parameter ever received a gradient.
    pub ever_had_grad: bool,
}

impl ParamEntry {
    /// The held gradient holds nothing that a step has not applied yet.
    pub fn is_stale(&self) -> bool {
        self.held.is_some_and(|h| h.is_stale())
    }

    /// The held gradient holds something new.
    pub fn is_fresh(&self) -> bool {
        self.held.is_some_and(|h| !h.is_stale())
    }

    /// The entry after a step applied `held` (a step's own gradients).
    pub(crate) fn applying(mut self, held: Option<Held>) -> Self {
        self.held = held;
        self
    }
}

/// The ledger of every parameter, indexed like the guard's parameter list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    generation: Generation,
    /// Backward passes (calls) added to the guard's buffers since the last
    /// reset, for the whole guard.
    passes_since_reset: u32,
    entries: Vec<ParamEntry>,
}

impl Ledger {
    /// Grows the ledger to `params` parameters; new ones hold nothing.
    pub fn resize(&mut self, params: usize) {
        self.entries.resize(params, ParamEntry::default());
    }

    /// Starts a new backward pass and returns its generation.
    pub fn next_generation(&mut self) -> Generation {
        self.generation += 1;
        self.generation
    }

    /// The newest generation given out (0 before the first pass).
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Counts one backward pass added to the buffers.
    pub fn count_pass(&mut self) {
        self.passes_since_reset = self.passes_since_reset.saturating_add(1);
    }

    /// Backward passes added to the buffers since the last reset.
    pub fn passes_since_reset(&self) -> u32 {
        self.passes_since_reset
    }

    /// Records that parameter `index` received the gradient of pass
    /// `generation`, added into whatever it already held; `applied_before`
    /// says that an earlier step already applied this very pass.
    pub fn record(&mut self, index: usize, generation: Generation, applied_before: bool) {
        let entry = &mut self.entries[index];
        entry.held = Some(match entry.held {
            Some(held) => held.with(generation, applied_before),
            None => Held::one(generation, applied_before),
        });
        entry.ever_had_grad = true;
    }

    /// Records that a step applied every held gradient: from now on each held
    /// pass is one an earlier step applied.
    pub fn mark_applied(&mut self) {
        for entry in &mut self.entries {
            if let Some(held) = &mut entry.held {
                held.reapplied = held.passes;
                entry.applied = Some(entry.applied.map_or(held.last, |a| a.max(held.last)));
            }
        }
    }

    /// Records that a step applied `held` to parameter `index` (a step that
    /// brings its own gradients: the buffers are untouched).
    pub fn mark_applied_one(&mut self, index: usize, held: Held) {
        let entry = &mut self.entries[index];
        entry.applied = Some(entry.applied.map_or(held.last, |a| a.max(held.last)));
        entry.ever_had_grad = true;
    }

    /// Records that a step which brought its own gradients applied a pass
    /// that parameter `index` also holds in its buffer, `times` times.
    pub fn reapplied_in_buffer(&mut self, index: usize, times: u32) {
        if let Some(held) = &mut self.entries[index].held {
            held.reapplied = held.reapplied.saturating_add(times).min(held.passes);
        }
    }

    /// Forgets every held gradient and the pass count (`zero_grad`).
    pub fn clear(&mut self) {
        for entry in &mut self.entries {
            entry.held = None;
        }
        self.passes_since_reset = 0;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<ParamEntry>()
    }

    /// The entries, in parameter order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }
}

/// A gradient made by one pass, for a step that brings its own gradients.
pub(crate) fn single(generation: Generation, applied_before: bool) -> Held {
    Held::one(generation, applied_before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(n: usize) -> Ledger {
        let mut l = Ledger::default();
        l.resize(n);
        l
    }

    #[test]
    fn passes_after_a_step_without_reset_are_reapplied() {
        let mut l = ledger(1);
        let g = l.next_generation();
        l.record(0, g, false);
        assert!(l.entries()[0].is_fresh());
        l.mark_applied();
        assert!(l.entries()[0].is_stale());
        let g = l.next_generation();
        l.record(0, g, false);
        let held = l.entries()[0].held.unwrap();
        assert_eq!(
            (held.first, held.last, held.passes, held.reapplied),
            (1, 2, 2, 1)
        );
        assert!(held.reapplies());
    }

    #[test]
    fn several_passes_before_one_step_are_not_reapplied() {
        let mut l = ledger(1);
        for _ in 0..3 {
            let g = l.next_generation();
            l.record(0, g, false);
            l.count_pass();
        }
        let held = l.entries()[0].held.unwrap();
        assert_eq!((held.passes, held.reapplied), (3, 0));
        assert_eq!(l.passes_since_reset(), 3);
    }

    #[test]
    fn clear_keeps_history_but_drops_the_gradient_and_the_count() {
        let mut l = ledger(2);
        let g = l.next_generation();
        l.record(0, g, false);
        l.count_pass();
        l.mark_applied();
        l.clear();
        let e = l.entries()[0];
        assert_eq!(e.held, None);
        assert_eq!(e.applied, Some(1));
        assert!(e.ever_had_grad);
        assert!(!l.entries()[1].ever_had_grad);
        assert_eq!(l.passes_since_reset(), 0);
    }
}
