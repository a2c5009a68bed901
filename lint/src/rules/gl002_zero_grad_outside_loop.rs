//! GL002 zero-grad-outside-loop.

use super::{Rule, Violation};
use crate::facts::LoopFacts;
use crate::ir::Updater;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL002",
    name: "zero-grad-outside-loop",
    summary: "the only gradient reset is before or after the loop, so gradients pile up across iterations",
    docs: DOCS,
    check,
    defers_to: &[],
};

const DOCS: &str = r#"## What it does
Checks for training loops whose gradients pile up while the only reset is
outside the loop: before it (once, at the start) or after it.

## Why is this bad?
A reset before the loop clears the gradients once; every iteration's
`backward()` then adds to the previous ones and every step applies their sum.
The same holds when the reset is in an outer loop and backward and step run in
an inner one.

## Example
```python
optimizer.zero_grad()
for x, y in loader:
    loss_fn(model(x), y).backward()
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
`--fix` moves the reset from before the loop to the top of the loop body (a
copy, when another loop still needs the original; with several resets
outside the loop, a copy of the nearest one before it, all kept). Safe when
the reset is before the loop and the step directly in the loop body (a
manual update under `with torch.no_grad():` and `for p in
model.parameters():` counts as directly in it). A reset after the loop, or a
step nested in the body (a branch, an accumulation guard): the reset goes
right after the step, only with `--unsafe-fixes` (a manual update nested in
the body gets GL001's fix instead, `p.grad = None` in its loop). A step in a
helper function the loop calls: the reset, in the loop's own names, moves to
the top of the loop body, only with `--unsafe-fixes`.
A finding whose step lies in another file than its loop (a method of a
class defined in another file of the invocation) gets the reset after the
step in that file, in its own names, only with `--unsafe-fixes`, checked by
linting the files together again.
"#;

/// Gradients pile up, the loop has no reset, but the function resets outside it.
pub fn applies(f: &LoopFacts) -> bool {
    !matches!(f.updater, Updater::Store(_))
        && f.pile_up_step.is_some()
        && f.resets_in_loop.is_empty()
        && !f.resets_outside_loop.is_empty()
}

fn check(f: &LoopFacts) -> Option<Violation> {
    if !applies(f) {
        return None;
    }
    Some(Violation {
        span: f.pile_up_step?,
        message: format!(
            "gradients pile up across iterations: {} is reset only outside this loop",
            f.updater.describe()
        ),
        help: "move the reset into the loop: after the step, or before the backward pass"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL002");
    }
}
