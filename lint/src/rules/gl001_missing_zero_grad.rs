//! GL001 missing-zero-grad.

use super::{Rule, Violation};
use crate::facts::LoopFacts;
use crate::ir::Updater;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL001",
    name: "missing-zero-grad",
    summary: "a loop runs backward and an update with no gradient reset on every iteration",
    docs: DOCS,
    check,
    defers_to: &["GL002", "GL005"],
};

const DOCS: &str = r#"## What it does
Checks for training loops that run a backward pass and an update (an optimizer
step, or a manual update such as `p -= lr * p.grad`) while some path through
an iteration never resets the gradients (`optimizer.zero_grad()`,
`model.zero_grad()`, `p.grad = None`).

Loops include the bodies frameworks run once per batch: Lightning's
`training_step` with manual optimization, ignite process functions given to
`Engine`, Hugging Face `Trainer.training_step` overrides (the trainer
resets the model's gradients between two calls), and per-batch methods
(`step`, `train_step`, ...) that run backward, step and a reset themselves.
The files of one invocation are analysed together: a loop calling a method
of a class defined in another file (`trainer.train_step(batch)`) follows it,
and a finding at a step in that file is reported there.

An accumulation window whose length is a setting (`args.accum_steps`) may be
1, its usual default: then every boundary test (`i % k == 0`) holds and every
other (`i % k == 1`) fails. A reset that only runs off the boundary never
runs, and the finding says "when `k` is 1". `x.grad = None` on an input tensor is not a reset;
neither is a new optimizer over the model's existing parameters, nor a reset
named without its call (`optimizer.zero_grad` alone on a line, a no-op: the
help says so).

Gradient ascent on a tensor's own gradient (`x.data += lr * x.grad /
x.grad.norm()`, a fooling image or a dream) is an update by hand too, and
settings read from a dict (`cfg["accumulation_interval"]`) are settings like
`args.x`.

## Why is this bad?
`loss.backward()` ADDS into each parameter's `.grad`. Without a reset, every
step applies the sum of all gradients so far: the effective learning rate grows
step after step and the model collapses, silently. (In tch-rs and in
gradguard's `backward`/`step` the same holds.)

## Example
```python
for x, y in loader:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
```

## Use instead
```python
for x, y in loader:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    model.zero_grad()
```
or fresh gradients: `grads = torch.autograd.grad(loss, model.parameters())`.

## Fix
`--fix` inserts `optimizer.zero_grad()` on the line after the step: the
step's indentation, the optimizer's own name (`opt` of AMP's
`scaler.step(opt)`), and the file's `set_to_none=`
argument when it uses one (Rust: `opt.zero_grad();`). Safe when the loop steps
one optimizer; with several optimizers, or a step in a helper function the
loop calls, only with `--unsafe-fixes`.

A manual update in a loop over parameters (`for p in model.parameters():`
`p -= lr * p.grad`, `p.data.add_(p.grad, alpha=-lr)`) gets `p.grad = None`
right after the update, inside the same loop and at its indentation: safe
when the loop's iterable names parameters (`model.parameters()`, `params`,
`group["params"]`) and nothing after the update in the iteration reads a
`.grad`; otherwise (a loop over `weights`, a norm of `p.grad` logged after
the update) only with `--unsafe-fixes`. Where no loop binds the updated
parameter (`params[i] -= lr * params[i].grad`), `--unsafe-fixes` inserts
`model.zero_grad()` after the loop holding the update (the model of the
file's one `model.parameters()`). A named tensor (`w -= lr * w.grad`) gets
`w.grad = None` after its update: safe when the update is a plain statement
of the loop body (only `with` blocks around it) and nothing after it reads
`w.grad`, unsafe under a condition or in a nested loop. An update in a
helper function the loop calls is fixed there, only with `--unsafe-fixes`.
A finding whose step lies in another file than its loop (a method of a
class defined in another file of the invocation) gets the reset after the
step in that file, in its own names (`self.optimizer.zero_grad()`), only
with `--unsafe-fixes` (the method may serve other callers), checked by
linting the files together again.

## References
- PyTorch: `torch.optim.Optimizer.zero_grad`, `torch.autograd.grad`
- pytorch/pytorch#47175
"#;

fn check(f: &LoopFacts) -> Option<Violation> {
    if matches!(f.updater, Updater::Store(_)) {
        return None;
    }
    let span = f.pile_up_step?;
    let (message, help) = match &f.updater {
        Updater::Manual => (
            "gradients pile up: this manual update applies `.grad` after `backward()` with no reset on every iteration".to_string(),
            "reset the gradients every iteration (`model.zero_grad()` or `p.grad = None` after the update), or use `torch.autograd.grad`".to_string(),
        ),
        Updater::Tensor(t) => (
            format!("gradients pile up: this manual update of `{t}` applies `{t}.grad` after `backward()` with no reset of `{t}.grad` on every iteration"),
            format!("reset it after the update (`{t}.grad.zero_()` or `{t}.grad = None`; a model's or optimizer's `zero_grad()` does not clear it), or use `torch.autograd.grad`"),
        ),
        other => {
            let o = other.describe();
            let reset = match other {
                Updater::Optimizer(name) => format!("{name}.zero_grad()"),
                _ => "zero_grad()".to_string(),
            };
            (
                format!("gradients pile up: {o} steps after `backward()` with no gradient reset on every iteration"),
                format!("call `{reset}` every iteration, after the step (or before the backward pass)"),
            )
        }
    };
    // The reset is there, named but not called: the fix is two characters.
    let help = match &f.uncalled_reset {
        Some(r) => format!("`{r}.zero_grad` in this loop names the reset without calling it: write `{r}.zero_grad()`"),
        None => help,
    };
    let (message, help) = match &f.pile_up_window_of_one {
        // Right for longer windows, wrong for the shortest (often the default).
        Some(k) => (
            format!("{message} when `{k}` is 1"),
            "with a window of one every iteration steps, and a reset tested off the window's boundary never runs: reset right after the step, under the step's condition".to_string(),
        ),
        None => (message, help),
    };
    Some(Violation {
        span,
        message,
        help,
    })
}

#[cfg(test)]
mod tests {
    use crate::{lint_source, Language};

    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL001");
    }

    const UNCALLED: &str = "\
def train(model, loader, optimizer):
    for x, y in loader:
        model(x).sum().backward()
        optimizer.step()
        optimizer.zero_grad
";

    #[test]
    fn a_reset_named_without_its_call_is_named_in_the_help() {
        let found = lint_source("t.py", UNCALLED, Language::Python).unwrap();
        let [d] = found.as_slice() else {
            panic!("one finding expected: {found:?}")
        };
        assert_eq!(d.code, "GL001");
        assert!(
            d.help.contains("write `optimizer.zero_grad()`"),
            "{}",
            d.help
        );
        // Called, it is a reset: nothing to report.
        let called = UNCALLED.replace("optimizer.zero_grad\n", "optimizer.zero_grad()\n");
        assert!(lint_source("t.py", &called, Language::Python)
            .unwrap()
            .is_empty());
    }
}
