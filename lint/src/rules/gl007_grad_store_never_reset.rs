//! GL007 grad-store-never-reset.

use super::{Rule, Violation};
use crate::facts::LoopFacts;
use crate::ir::Updater;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL007",
    name: "grad-store-never-reset",
    summary: "Rust/candle: GradStore::extend accumulation with no reset after the step",
    docs: DOCS,
    check,
    defers_to: &[],
};

const DOCS: &str = r#"## What it does
Checks Rust (candle) loops that sum backward passes into a `GradStore` with
`GradStore::extend` and apply it with a step, but never start a new store after
the step.

## Why is this bad?
This is the missing `zero_grad` rebuilt by hand: every step applies the sum of
all gradients since the store was made, and the model diverges.

## Example
```rust
let mut acc = loss.backward()?;
for batch in batches {
    acc.extend(model.loss(&batch)?.backward()?)?;
    opt.step(&acc)?;
}
```

## Use instead
```rust
for batch in batches {
    let mut acc = model.loss(&batch[0])?.backward()?;
    for micro in &batch[1..] {
        acc.extend(model.loss(micro)?.backward()?)?;
    }
    opt.step(&acc)?;
}
```
or gradguard's `Guarded` with `accumulation_steps(k)` and `zero_grad()`.

## Fix
No automatic fix: the store has to be rebound after the step (for example
`acc = GradStore::new()`), and which binding is right depends on the code.
"#;

fn check(f: &LoopFacts) -> Option<Violation> {
    let Updater::Store(var) = &f.updater else {
        return None;
    };
    if !f.store_extended_in_loop {
        return None;
    }
    Some(Violation {
        span: f.pile_up_step?,
        message: format!("`{var}` sums every backward pass with `extend` and is never reset: each step applies all gradients so far"),
        help: format!("start a new store after the step (`{var} = ...backward()?` or a store made inside the loop)"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL007");
    }
}
