//! GL006 stale-grad-store.

use super::{Rule, Violation};
use crate::facts::LoopFacts;
use crate::ir::Updater;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL006",
    name: "stale-grad-store",
    summary: "Rust/candle: a GradStore made outside the loop is applied inside it",
    docs: DOCS,
    check,
    defers_to: &[],
};

const DOCS: &str = r#"## What it does
Checks Rust (candle) loops that apply a `GradStore` computed by
`loss.backward()` before the loop, and never computed again inside it.

## Why is this bad?
Every step applies the same, first gradients: the parameters move in a fixed
direction whatever the data says. gradguard reports it at run time as `stale`.

## Example
```rust
let grads = loss.backward()?;
for _ in 0..steps {
    opt.step(&grads)?;
}
```

## Use instead
```rust
for _ in 0..steps {
    let loss = model.forward(&x)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    opt.step(&grads)?;
}
```

## Fix
No automatic fix: the `GradStore` has to be bound anew from each iteration's
backward pass, a change of the code's data flow.
"#;

fn check(f: &LoopFacts) -> Option<Violation> {
    let span = f.stale_store_step?;
    let Updater::Store(var) = &f.updater else {
        return None;
    };
    Some(Violation {
        span,
        message: format!("`{var}` is computed before this loop and applied on every iteration: every step applies the same gradients"),
        help: format!("compute `{var}` inside the loop (`let {var} = loss.backward()?;`) before the step"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL006");
    }
}
