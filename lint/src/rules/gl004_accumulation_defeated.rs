//! GL004 accumulation-defeated.

use super::{Rule, Violation};
use crate::facts::LoopFacts;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL004",
    name: "accumulation-defeated",
    summary: "the step is guarded (gradient accumulation) but the reset runs every iteration",
    docs: DOCS,
    check,
    defers_to: &["GL003"],
};

const DOCS: &str = r#"## What it does
Checks for gradient accumulation whose step runs only on some iterations
(`if (i + 1) % k == 0:`) while the reset runs on every iteration.

Not flagged: a reset when the window opens and a step when it closes on the
same counter (`if i % k == 0: zero_grad()` ... `if (i + 1) % k == 0: step()`),
a step skipped because a value is non-finite or out of range (that pass is
meant to be dropped), a reset at the start of an epoch or fold (a new run
starts a new window), a reset that runs only when the window is one batch long
(`if k == 1: zero_grad()`, or `i % k == 1 or k == 1`: every batch steps then),
a step in a helper under a parameter the loop hands the window's test
(`back(loss, opt, should_step=(i + 1) % k == 0)`, or a name bound to it: the
helper's `if should_step:` is read as that test),
the prepared optimizer's reset inside or right after `with
accelerator.accumulate(model):` (accelerate skips it until the window closes),
and, with several optimizers, backward passes that belong to another
optimizer's cycle.

Flagged: a model's own `model.zero_grad()` inside `accelerator.accumulate`
while the prepared optimizer steps there: accelerate does not skip it, so
every micro-batch but the last is cleared before the window's step.

## Why is this bad?
The reset clears the accumulated gradients of the iterations without a step:
the step applies only the last micro-batch's gradients, and k-1 of every k
backward passes are computed for nothing. The effective batch is k times
smaller than intended.

## Example
```python
for i, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
```

## Use instead
```python
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
```

## Fix
No automatic fix: where the reset belongs (under the step's guard, after the
step) depends on how the accumulation is meant to work.
"#;

fn check(f: &LoopFacts) -> Option<Violation> {
    let span = f.reset_discarding_accumulation?;
    Some(Violation {
        span,
        message: format!(
            "this reset runs on iterations where {} does not step: accumulated gradients are thrown away",
            f.updater.describe()
        ),
        help: "put the reset under the same condition as the step, right after it".to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL004");
    }
}
