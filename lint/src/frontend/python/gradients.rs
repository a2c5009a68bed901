//! Shapes of expressions that touch gradients and optimizers (`x.grad`,
//! `w.data`, `X.parameters()`, optimizer and scheduler constructors).

use ruff_python_ast::visitor::{walk_expr, Visitor};
use ruff_python_ast::{self as ast, Expr, Operator};

use super::syntax::dotted;
use crate::frontend::OPTIMIZER_TYPES;

/// Whether `expr` reads a `.grad` anywhere.
pub(super) fn mentions_grad(expr: &Expr) -> bool {
    struct Finder(bool);
    impl<'a> Visitor<'a> for Finder {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Attribute(a) = expr {
                if a.attr.id.as_str() == "grad" {
                    self.0 = true;
                }
            }
            walk_expr(self, expr);
        }
    }
    let mut f = Finder(false);
    f.visit_expr(expr);
    f.0
}

/// `x.grad` or `x.grad.data`.
pub(super) fn is_grad_attribute(expr: &Expr) -> bool {
    match expr {
        Expr::Attribute(a) if a.attr.id.as_str() == "grad" => true,
        Expr::Attribute(a) if a.attr.id.as_str() == "data" => is_grad_attribute(&a.value),
        _ => false,
    }
}

/// The first `X` of an `X.parameters()` / `X.named_parameters()` inside `expr`.
pub(super) fn parameters_owner(expr: &Expr) -> Option<String> {
    struct Finder(Option<String>);
    impl<'a> Visitor<'a> for Finder {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if self.0.is_some() {
                return;
            }
            if let Expr::Call(call) = expr {
                if let Expr::Attribute(a) = call.func.as_ref() {
                    if matches!(a.attr.id.as_str(), "parameters" | "named_parameters") {
                        self.0 = dotted(&a.value);
                        return;
                    }
                }
            }
            walk_expr(self, expr);
        }
    }
    let mut f = Finder(None);
    f.visit_expr(expr);
    f.0
}

/// The tensor an assignment writes in place: `x.data` (`x`), `x[...]` and
/// `x.data[...]` (`x`).
pub(super) fn updated_tensor(target: &Expr) -> Option<String> {
    match target {
        Expr::Attribute(a) if a.attr.id.as_str() == "data" => dotted(&a.value),
        Expr::Subscript(s) => dotted(data_owner(&s.value)?),
        _ => None,
    }
}

/// The `x` of `x.grad[:] = 0` or `x.grad[...] = 0.0` (every element of the
/// gradient set to zero), `x` a plain name (a tensor, a loop variable over
/// parameters): `model.embed.weight.grad[...] = 0` masks one layer's
/// gradient, it resets nothing an optimizer over the model holds.
pub(super) fn zeroed_whole_grad<'e>(target: &'e Expr, value: &Expr) -> Option<&'e Expr> {
    let Expr::Subscript(s) = target else {
        return None;
    };
    let whole = match s.slice.as_ref() {
        Expr::Slice(sl) => sl.lower.is_none() && sl.upper.is_none() && sl.step.is_none(),
        Expr::EllipsisLiteral(_) => true,
        _ => false,
    };
    let zero = match value {
        Expr::NumberLiteral(n) => match &n.value {
            ast::Number::Int(i) => i.as_u8() == Some(0),
            ast::Number::Float(f) => *f == 0.0,
            _ => false,
        },
        _ => false,
    };
    (whole && zero && is_grad_attribute(&s.value))
        .then(|| grad_owner(&s.value))
        .flatten()
        .filter(|owner| matches!(owner, Expr::Name(_)))
}

/// `w` of `w` or `w.data`.
pub(super) fn data_owner(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::Attribute(a) if a.attr.id.as_str() == "data" => Some(&a.value),
        Expr::Name(_) | Expr::Attribute(_) => Some(expr),
        _ => None,
    }
}

/// The dotted owners `x` of every `x.grad` inside `expr`.
pub(super) fn grad_owners(expr: &Expr) -> Vec<String> {
    struct Finder(Vec<String>);
    impl<'a> Visitor<'a> for Finder {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Attribute(a) = expr {
                if a.attr.id.as_str() == "grad" {
                    if let Some(owner) = dotted(&a.value) {
                        self.0.push(owner);
                    }
                }
            }
            walk_expr(self, expr);
        }
    }
    let mut f = Finder(Vec::new());
    f.visit_expr(expr);
    f.0
}

/// Whether `expr` holds a step on the plain name `name` by its own
/// gradient: a sum or difference of `name` (read other than as the owner of
/// a gradient) and something computed from `name.grad` (`x + alpha *
/// x.grad.sign()`, also as a call's argument or receiver:
/// `torch.clamp(x - lr * x.grad, 0, 1)`, `(x - lr * x.grad).clamp(0, 1)`).
/// Not inside comprehensions or lambdas.
pub(super) fn reads_besides_grad(expr: &Expr, name: &str) -> bool {
    fn plain(expr: &Expr, name: &str) -> bool {
        match expr {
            Expr::Attribute(a) if a.attr.id.as_str() == "grad" => false,
            Expr::Name(n) => n.id.as_str() == name,
            Expr::ListComp(_)
            | Expr::SetComp(_)
            | Expr::DictComp(_)
            | Expr::Generator(_)
            | Expr::Lambda(_) => false,
            Expr::Attribute(a) => plain(&a.value, name),
            Expr::Call(c) => {
                plain(&c.func, name) || c.arguments.args.iter().any(|a| plain(a, name))
            }
            Expr::BinOp(b) => plain(&b.left, name) || plain(&b.right, name),
            Expr::UnaryOp(u) => plain(&u.operand, name),
            _ => false,
        }
    }
    let reads_grad = |e: &Expr| grad_owners(e).iter().any(|o| o == name);
    match expr {
        Expr::BinOp(b) if matches!(b.op, Operator::Add | Operator::Sub) => {
            plain(&b.left, name) && reads_grad(&b.right)
                || plain(&b.right, name) && reads_grad(&b.left)
        }
        // `torch.clamp(x + ..., 0, 1)`, `(x + ...).clamp(0, 1)`.
        Expr::Call(c) => {
            c.arguments.args.iter().any(|a| reads_besides_grad(a, name))
                || matches!(c.func.as_ref(), Expr::Attribute(m) if reads_besides_grad(&m.value, name))
        }
        _ => false,
    }
}

/// The `x` of `x.grad` / `x.grad.data`.
pub(super) fn grad_owner(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::Attribute(a) if a.attr.id.as_str() == "grad" => Some(&a.value),
        Expr::Attribute(a) if a.attr.id.as_str() == "data" => grad_owner(&a.value),
        _ => None,
    }
}

/// `get_linear_schedule_with_warmup(...)`, `StepLR(...)`, `WarmupScheduler(...)`.
pub(super) fn is_scheduler_constructor(value: &Expr) -> bool {
    let Expr::Call(call) = value else {
        return false;
    };
    let callee = dotted(&call.func).unwrap_or_default();
    let last = callee.rsplit('.').next().unwrap_or("");
    let lower = callee.to_ascii_lowercase();
    lower.contains("sched") || last.ends_with("LR") || lower.contains("warmup")
}

/// `torch.optim.AdamW(...)`, `optim.SGD(...)`, `Lion(...)`.
pub(super) fn is_optimizer_constructor(value: &Expr) -> bool {
    let Expr::Call(call) = value else {
        return false;
    };
    is_optimizer_callee(&dotted(&call.func).unwrap_or_default())
}

/// Whether a call of `callee` (dotted) builds an optimizer.
pub(super) fn is_optimizer_callee(callee: &str) -> bool {
    let last = callee.rsplit('.').next().unwrap_or("");
    // Schedule-free optimizers (`schedulefree.AdamWScheduleFree`) are
    // optimizers, not schedulers.
    let schedule_free = last.contains("ScheduleFree");
    let scheduler =
        !schedule_free && (callee.to_ascii_lowercase().contains("sched") || last.ends_with("LR"));
    schedule_free || !scheduler && (OPTIMIZER_TYPES.contains(&last) || callee.contains("optim."))
}
