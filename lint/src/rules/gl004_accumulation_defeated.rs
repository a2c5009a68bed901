//! GL004 accumulation-defeated.

use super::{gl003_zero_grad_before_step, Rule, Violation};
use crate::facts::LoopFacts;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL004",
    name: "accumulation-defeated",
    summary: "the step is guarded (gradient accumulation) but the reset runs every iteration",
    docs: DOCS,
    check,
};

const DOCS: &str = r#"## What it does
Checks for gradient accumulation whose step runs only on some iterations
(`if (i + 1) % k == 0:`) while the reset runs on every iteration.

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
    if (gl003_zero_grad_before_step::RULE.check)(f).is_some() {
        return None;
    }
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
