//! GL008 skipped-pass-applied.

use super::{Rule, Violation};
use crate::facts::LoopFacts;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL008",
    name: "skipped-pass-applied",
    summary: "a skip after backward leaves the pass's gradients to be applied by the next step",
    docs: DOCS,
    check,
    defers_to: &["GL001", "GL002", "GL005"],
};

const DOCS: &str = r#"## What it does
Checks for loops that skip the update when a value is non-finite or out of
range (`if torch.isnan(loss): continue`, `if grad_norm > limit: continue`)
after `backward()` has run, while the only reset comes after the step.

## Why is this bad?
The skip means "drop this pass", but its gradients stay in `.grad`: the next
iteration's `backward()` adds to them and its step applies both, NaN or
outlier included. A single bad batch then poisons the next update (with
NaN, every later one).

## Example
```python
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    if not torch.isfinite(loss):
        continue
    optimizer.step()
    optimizer.zero_grad()
```

## Use instead
```python
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    if not torch.isfinite(loss):
        continue
    optimizer.step()
```
or reset in the skip branch (`optimizer.zero_grad(); continue`), or test
the loss before `backward()`.

In Rust the same holds for tch-rs (`loss.backward(); if
!f64::try_from(&loss)?.is_finite() { continue }; opt.step(); opt.zero_grad()`)
and gradguard (`opt.backward(&loss)?`, a skip on `loss_val.is_nan()`, then
`opt.step()?; opt.zero_grad()`). `opt.backward_step(&loss)` leaves nothing
behind (tch resets before its pass; candle and gradguard step with a fresh
`GradStore`), and neither does a candle loop whose `loss.backward()?`
returns a fresh store: a skip there drops the pass.

## Fix
No automatic fix: whether to reset at the top of the iteration or in the
skip branch (and whether the test belongs before `backward()`) is the
reader's call.
"#;

fn check(f: &LoopFacts) -> Option<Violation> {
    let span = f.skipped_pass_applied?;
    Some(Violation {
        span,
        message: format!(
            "a skipped pass's gradients reach this step: after a skip past {} no reset runs before the next `backward()`",
            f.updater.describe()
        ),
        help: "reset before the backward pass (top of the loop), or in the skip branch before `continue`"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL008");
    }
}
