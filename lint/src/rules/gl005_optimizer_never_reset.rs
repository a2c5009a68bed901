//! GL005 optimizer-never-reset.

use super::{Rule, Violation};
use crate::facts::LoopFacts;
use crate::ir::Updater;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL005",
    name: "optimizer-never-reset",
    summary: "several optimizers are stepped in a loop and one of them is never reset",
    docs: DOCS,
    check,
    defers_to: &["GL002"],
};

const DOCS: &str = r#"## What it does
Checks loops that step several optimizers (a GAN's generator and
discriminator, an actor and a critic) for an optimizer whose gradients are
never reset in the loop while the others are. (When no optimizer of the loop
is reset, each step is GL001's finding.) A step in a loop of its own (a
critic stepped `n_critic` times per batch) that is never reset anywhere,
beside optimizers the loop around it resets, is this rule's finding too,
reported by that loop.

## Why is this bad?
The other optimizers' resets do not touch its parameters (unless they share a
model): its gradients pile up across iterations and its model diverges while
the other trains normally.

## Example
```python
for real in loader:
    opt_g.zero_grad()
    g_loss(real).backward()
    opt_g.step()
    d_loss(real).backward()
    opt_d.step()
```

## Use instead
```python
for real in loader:
    opt_g.zero_grad()
    g_loss(real).backward()
    opt_g.step()
    opt_d.zero_grad()
    d_loss(real).backward()
    opt_d.step()
```

## Fix
`--unsafe-fixes` inserts the missing `opt.zero_grad()` right after the
never-reset optimizer's step; never with `--fix` alone (several optimizers:
which reset covers which parameters is the reader's call).
A finding whose step lies in another file than its loop (a method of a
class defined in another file of the invocation) gets the reset after the
step in that file, in its own names, checked by linting the files together
again.
"#;

/// Several optimizers, others are reset in the loop, this one piles up and
/// has no reset in it (a reset outside it is GL002's finding, when GL002 is
/// enabled; no reset of any optimizer in the loop is GL001's).
pub fn applies(f: &LoopFacts) -> bool {
    matches!(f.updater, Updater::Optimizer(_))
        && f.optimizers_in_loop >= 2
        && f.others_reset_in_loop
        && f.pile_up_step.is_some()
        && f.resets_in_loop.is_empty()
}

fn check(f: &LoopFacts) -> Option<Violation> {
    if !applies(f) {
        return None;
    }
    let Updater::Optimizer(name) = &f.updater else {
        return None;
    };
    Some(Violation {
        span: f.pile_up_step?,
        message: format!(
            "`{name}` is stepped in this loop with {} other optimizer(s) but never reset: its gradients pile up",
            f.optimizers_in_loop - 1
        ),
        help: format!("call `{name}.zero_grad()` every iteration, like the other optimizers"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL005");
    }
}
