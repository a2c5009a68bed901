//! GL009 stray-backward-pass.

use super::{Rule, Violation};
use crate::facts::LoopFacts;
use crate::ir::Updater;

/// The rule.
pub const RULE: Rule = Rule {
    code: "GL009",
    name: "stray-backward-pass",
    summary: "another optimizer's loss backpropagates into this optimizer's model after its last reset, and its step applies that pass",
    docs: DOCS,
    check,
    defers_to: &["GL001", "GL002", "GL005"],
};

const DOCS: &str = r#"## What it does
Checks loops that step several optimizers (a GAN's discriminator and
generator, a critic and an actor) for a backward pass of one optimizer's
loss that goes through the model another optimizer was built over, when
that other optimizer resets only after its step: the pass lands in its
gradients and its next step applies it.

It reports only what it is certain of: the other loss is computed, in the
same function, from a call of the model (`g_loss = crit(net_d(fake), real)`,
followed through plain assignments; not under `.detach()`, `.item()` or
`torch.no_grad()`, and `loss.backward(inputs=...)` is left out), both
optimizers are built in the file over named models
(`opt_d = Adam(net_d.parameters())`), the other optimizer's parameters
are other models' only, nothing that may clear the model's gradients runs
between the pass and the step, and the file never freezes the model
(`net_d.requires_grad_(False)`, `for p in net_d.parameters(): p.requires_grad
= False`, `set_requires_grad(net_d, False)`, Lightning's
`toggle_optimizer`). Detaching the generator's output (`net_g(z).detach()`)
does not protect the discriminator: its parameters still receive the
generator loss's gradient.

The other shape: the other loss's pass runs after this optimizer's own
pass and before its step, in the same iteration (`opt_vq.zero_grad();
vq_loss.backward(); opt_disc.zero_grad(); gan_loss.backward();
opt_vq.step()`, the discriminator's loss computed on the VQGAN's output):
the reset comes too early to help, and the step belongs before the other
pass. A pass is another optimizer's when that optimizer is reset after a
pass of this one's and before it. Optimizers are followed through a
helper that builds and returns them (`self.opt_vq, self.opt_disc =
self.configure_optimizers()`) and through lists of parameters
(`params = list(a.parameters()) + list(b.parameters())`, or appended in a
loop over `net.named_parameters()`). A loss through a whole model reaches
an optimizer built over two or more of its parts; over one part it is a
guess (`medium`). Freezing a part of the model (`net_d.backbone`) does not
freeze the model. Optimizers built in one file and handed to a function
of another (`train_one_epoch(model, disc, loader, opt_g, opt_d)`) are
known there as built over the models handed with them.

Both optimizers reset side by side, then both passes, then both steps
(GAN-BERT: `opt_g.zero_grad(); opt_d.zero_grad(); g_loss.backward(retain_graph=True);
d_loss.backward(); opt_g.step(); opt_d.step()`): nothing in the order says
whose pass is whose, so each pass is read as the pass of both. Read by the
losses' names (`g_loss`, `loss_G`, `errG` for `opt_g`, `gen_optimizer`,
`optimizerG`; one optimizer alone, the same word, a three-letter word's
first letter, or a cut of three letters or more: `disc` for
`discriminator`), or by the models they go through (SAC: `policy_loss`
is the only pass through the actor, so it is `act_opt`'s, while the
critic has a pass of its own, `q_loss`, that does not go through the
actor), each step applies the other's pass:
reported at the `low` tier, as resting on that reading, only where the
other optimizer's reset too comes before the pass with no step between,
and only where the loss reaches the model certainly (not through a function of an imported
module such as `rl_utils.compute_advantage`, which may detach it).

An attack's passes are another loss's too: in adversarial training, the
passes of an attack's loop (`loss.backward()` then a hand-written update
of the perturbation, `delta.data = delta + alpha * delta.grad.sign()`)
also go through the model; when the optimizer is reset before the attack
and not again before its own pass, its step applies them all.

## Why is this bad?
`backward()` adds the gradient of its loss into every parameter the loss
depends on, whichever optimizer the loss was meant for. The generator's loss
goes through the discriminator, so its pass writes into the discriminator's
`.grad`; with the discriminator's reset after its step, those gradients are
still there when the next iteration's `d_loss.backward()` adds to them, and
`opt_d.step()` moves the discriminator partly to help the generator (the
opposite of its objective). Training still runs, and the discriminator is
quietly weakened; in an actor-critic the critic is pushed towards whatever
the actor's loss prefers.

## Example
```python
opt_d = torch.optim.Adam(net_d.parameters())
opt_g = torch.optim.Adam(net_g.parameters())
for real in loader:
    fake = net_g(torch.randn(real.size(0), nz))
    d_loss = crit(net_d(real), ones) + crit(net_d(fake.detach()), zeros)
    d_loss.backward()
    opt_d.step()
    opt_d.zero_grad()

    opt_g.zero_grad()
    g_loss = crit(net_d(fake), ones)
    g_loss.backward()          # also writes into net_d's .grad
    opt_g.step()
```

## Use instead
```python
for real in loader:
    fake = net_g(torch.randn(real.size(0), nz))
    opt_d.zero_grad()          # clears the generator's pass from net_d
    d_loss = crit(net_d(real), ones) + crit(net_d(fake.detach()), zeros)
    d_loss.backward()
    opt_d.step()

    opt_g.zero_grad()
    g_loss = crit(net_d(fake), ones)
    g_loss.backward()
    opt_g.step()
```
or reset the discriminator after the generator's step, or freeze it during
the generator's pass (`net_d.requires_grad_(False)` ... `True`).

## Fix
`--fix` inserts `opt.zero_grad()` (the optimizer's own name, the file's
`set_to_none=` style) on the line before the optimizer's own backward
pass, the first one the stray pass meets, when that is certain: the backward
pass and the step are statements of the same block in the loop, and no
pass of the optimizer's own is pending there in any iteration (the reset
then clears only other losses' gradients). Otherwise `--unsafe-fixes`
inserts it; with no single such backward pass, there is no automatic fix.
The existing reset after the step is kept.

## References
- PyTorch DCGAN example (`netD.zero_grad()` before the discriminator's pass)
- PyTorch: `torch.Tensor.backward` (gradients accumulate into `.grad`),
  `torch.nn.Module.requires_grad_`
"#;

/// The loss's text, shortened to one line.
fn short(loss: &str) -> String {
    let first = loss.lines().next().unwrap_or("").trim();
    if first.chars().count() > 40 || first.len() < loss.trim().len() {
        let cut: String = first.chars().take(37).collect();
        format!("{cut}...")
    } else {
        first.to_string()
    }
}

fn check(f: &LoopFacts) -> Option<Violation> {
    let stray = f.stray_pass.as_ref()?;
    let Updater::Optimizer(name) = &f.updater else {
        return None;
    };
    let loss = short(&stray.loss);
    let other = if stray.by_hand {
        format!("the update of `{}`", stray.other)
    } else {
        format!("`{}`", stray.other)
    };
    Some(Violation {
        span: stray.step,
        message: format!(
            "`{name}` applies another loss's gradients: the backward pass of `{loss}` (for {other}) goes through `{}` after `{name}`'s last reset",
            stray.model
        ),
        help: if stray.by_hand {
            format!(
                "call `{name}.zero_grad()` after the passes for `{}` and before `{name}`'s own backward pass",
                stray.other
            )
        } else if stray.after_own {
            format!(
                "call `{name}.step()` before the backward pass of `{loss}` (or compute `{loss}` from detached outputs of `{}`)",
                stray.model
            )
        } else {
            format!(
                "call `{name}.zero_grad()` before `{name}`'s own backward pass (not only after its step), or freeze `{}` during that pass",
                stray.model
            )
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures() {
        crate::test_support::assert_fixtures("GL009");
    }

    #[test]
    fn long_losses_are_shortened() {
        assert_eq!(super::short("g_loss"), "g_loss");
        assert_eq!(super::short("crit(\n  a, b)"), "crit(...");
        assert_eq!(super::short(&"x".repeat(50)).len(), 40);
    }
}
