//! The gradient ledger: which backward passes each parameter's gradient holds.
//!
//! Pure bookkeeping over integers. Nothing here reads a tensor or touches a
//! device, so keeping the ledger costs the same on CPU and GPU.

/// A backward pass number given by the guard: 1, 2, 3, ...
pub type Generation = u64;

/// The backward passes summed into one gradient: first, last, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenSpan {
    /// The oldest pass in the gradient.
    pub first: Generation,
    /// The newest pass in the gradient.
    pub last: Generation,
    /// How many passes were summed.
    pub count: u32,
}

impl GenSpan {
    /// A gradient made by exactly one pass.
    pub fn single(generation: Generation) -> Self {
        Self {
            first: generation,
            last: generation,
            count: 1,
        }
    }

    /// The span after one more pass was added into the same gradient.
    pub fn with(self, generation: Generation) -> Self {
        Self {
            first: self.first.min(generation),
            last: self.last.max(generation),
            count: self.count.saturating_add(1),
        }
    }
}

/// What the ledger knows about one parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamEntry {
    /// The passes held by the parameter's current gradient (`None`: no gradient).
    pub held: Option<GenSpan>,
    /// The newest pass already applied by a step.
    pub applied: Option<Generation>,
    /// Whether the parameter ever received a gradient.
    pub ever_had_grad: bool,
}

impl ParamEntry {
    /// The held gradient holds nothing newer than what a step already applied.
    pub fn is_stale(&self) -> bool {
        matches!((self.held, self.applied), (Some(h), Some(a)) if h.last <= a)
    }
}

/// The ledger of every parameter, indexed like the guard's parameter list.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    generation: Generation,
    entries: Vec<ParamEntry>,
}

impl Ledger {
    /// A ledger for `params` parameters, none holding a gradient.
    pub fn new(params: usize) -> Self {
        Self {
            generation: 0,
            entries: vec![ParamEntry::default(); params],
        }
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

    /// Records that parameter `index` received a gradient from `generation`,
    /// added into whatever it already held.
    pub fn record(&mut self, index: usize, generation: Generation) {
        let entry = &mut self.entries[index];
        entry.held = Some(match entry.held {
            Some(span) => span.with(generation),
            None => GenSpan::single(generation),
        });
        entry.ever_had_grad = true;
    }

    /// Records that a step applied every held gradient.
    pub fn mark_applied(&mut self) {
        for entry in &mut self.entries {
            if let Some(span) = entry.held {
                entry.applied = Some(entry.applied.map_or(span.last, |a| a.max(span.last)));
            }
        }
    }

    /// Forgets every held gradient (`zero_grad`).
    pub fn clear(&mut self) {
        for entry in &mut self.entries {
            entry.held = None;
        }
    }

    /// The entries, in parameter order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// One entry, mutable (used when a step brings its own gradients).
    pub fn entry_mut(&mut self, index: usize) -> &mut ParamEntry {
        &mut self.entries[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_passes_without_clear_widen_the_span() {
        let mut ledger = Ledger::new(1);
        for _ in 0..3 {
            let g = ledger.next_generation();
            ledger.record(0, g);
        }
        assert_eq!(
            ledger.entries()[0].held,
            Some(GenSpan {
                first: 1,
                last: 3,
                count: 3
            })
        );
    }

    #[test]
    fn applied_gradient_is_stale_until_a_new_pass() {
        let mut ledger = Ledger::new(1);
        let g = ledger.next_generation();
        ledger.record(0, g);
        assert!(!ledger.entries()[0].is_stale());
        ledger.mark_applied();
        assert!(ledger.entries()[0].is_stale());
        let g = ledger.next_generation();
        ledger.record(0, g);
        assert!(!ledger.entries()[0].is_stale());
    }

    #[test]
    fn clear_keeps_history_but_drops_the_gradient() {
        let mut ledger = Ledger::new(2);
        let g = ledger.next_generation();
        ledger.record(0, g);
        ledger.mark_applied();
        ledger.clear();
        let e = ledger.entries()[0];
        assert_eq!(e.held, None);
        assert_eq!(e.applied, Some(1));
        assert!(e.ever_had_grad);
        assert!(!ledger.entries()[1].ever_had_grad);
    }
}
