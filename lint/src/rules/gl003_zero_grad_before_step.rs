//! GL003 zero-grad-before-step.

use super::{Rule, Violation};
use crate::facts::LoopFacts;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL003",
    name: "zero-grad-before-step",
    summary: "a gradient reset between backward and step: the step applies zeros",
    docs: DOCS,
    check,
    defers_to: &[],
};

const DOCS: &str = r#"## What it does
Checks for a gradient reset placed after `backward()` and before the step in
the same iteration, with no backward pass in between. Also, where the step
runs first in the iteration and every step follows a pass on every iteration
(no accumulation window), a reset after the pass that every way to the next
step passes (`optimizer.step()`, then the pass, then `zero_grad()`): every
step applies zeroed gradients. Gradients written by hand after the reset on
every way to the step (`p.grad = clipped[name]` in a loop over the
parameters: per-sample clipping, projected multi-task gradients) are what
the step applies: no finding (unless they are zeros).

## Why is this bad?
The reset throws away the gradients just computed; the step then applies
zeros (or nothing, with `set_to_none=True`). The model does not learn, while
the loss is computed as usual.

## Example
```python
for x, y in loader:
    loss_fn(model(x), y).backward()
    optimizer.zero_grad()
    optimizer.step()
```

## Use instead
```python
for x, y in loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
```

## Fix
`--fix` moves the reset before the backward pass. Safe when the reset and
the backward pass are statements of the same block; when the backward pass is
in another block (a `with`, an `if`), only with `--unsafe-fixes`. When no
line of the loop above the reset calls `backward(` (the pass is in a helper
function the loop calls), a reset that is a statement of the loop body moves
to the top of the body, before everything the iteration runs: safe with one
optimizer in the loop, unsafe with several. A reset in a helper function,
followed in its block by its optimizer's step, moves right after that step,
only with `--unsafe-fixes`. Every move is checked: one that leaves the
backward pass after the reset is refused.
A finding whose reset lies in another file than its loop (a method of a
class defined in another file of the invocation) has the reset moved after
its step there when the step follows it in the same block, only with
`--unsafe-fixes`, checked by linting the files together again.
"#;

fn check(f: &LoopFacts) -> Option<Violation> {
    let span = f.reset_between_backward_and_step?;
    Some(Violation {
        span,
        message: format!(
            "this reset runs after `backward()` and before {} steps: the step applies zeroed gradients",
            f.updater.describe()
        ),
        help: "move the reset after the step, or before the backward pass".to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL003");
    }
}
