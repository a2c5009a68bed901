//! The first pass over every statement: what names stand for (optimizers,
//! schedulers, instances of the file's classes, aliases, parameters).

use ruff_python_ast::{self as ast, Expr, Stmt};

use super::gradients::{
    data_owner, grad_owners, is_optimizer_constructor, is_scheduler_constructor, parameters_owner,
    reads_besides_grad, updated_tensor,
};
use super::lowerer::Lowerer;
use super::syntax::{dotted, listed_names, names_read, nested_bodies, target_names};
use super::syntax::{span, MAX_DEPTH};
use crate::frontend::looks_like_optimizer;

impl<'s> Lowerer<'s> {
    /// Records functions, methods, optimizer, scheduler and instance
    /// variables, aliases and parameter loop variables, anywhere.
    pub(super) fn declarations(&mut self, body: &[Stmt], depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for (i, stmt) in body.iter().enumerate() {
            if let Stmt::Assign(a) = stmt {
                self.out_of_place_steps(a, &body[i + 1..]);
            }
            match stmt {
                Stmt::FunctionDef(f) => {
                    self.functions.insert(f.name.id.to_string());
                    self.annotated_instances(&f.parameters);
                    self.declarations(&f.body, depth + 1);
                }
                Stmt::ClassDef(c) => self.declarations(&c.body, depth + 1),
                Stmt::Assign(a) => self.assignment_declarations(a),
                Stmt::Expr(e) => self.call_declarations(e),
                // `w -= lr * w.grad` (or `w.data -= ...`, or `+=` for an
                // ascent): `w` is a parameter of a hand-written optimizer,
                // so `w.grad.zero_()` resets it.
                Stmt::AugAssign(a) if matches!(a.op, ast::Operator::Sub | ast::Operator::Add) => {
                    let owner = data_owner(&a.target);
                    if let Some(w) = owner.and_then(dotted) {
                        // Through an alias too (`grad = x.grad`, `x.data
                        // += lr * grad / grad.norm()`).
                        if self.reads_grad_of(&a.value, &w) {
                            self.parameter_vars.insert(w);
                        }
                    }
                }
                Stmt::For(f) => {
                    let iter = self.text(f.iter.as_ref()).to_ascii_lowercase();
                    if iter.contains("param") || iter.contains("weight") {
                        let mut names = Vec::new();
                        target_names(&f.target, &mut names);
                        self.parameter_vars.extend(names.iter().cloned());
                        self.param_loop_vars.extend(names);
                    }
                    self.nested_declarations(stmt, depth);
                }
                _ => self.nested_declarations(stmt, depth),
            }
        }
    }

    /// Parameters annotated with a class of the file or one it imports
    /// (`def train(agent: DDPGLearner)`, `Optional[Trainer]`, `"Trainer"`):
    /// instances of it, their method calls followed as when the caller
    /// built them.
    fn annotated_instances(&mut self, parameters: &ast::Parameters) {
        for p in parameters.iter_non_variadic_params() {
            let Some(annotation) = p.parameter.annotation.as_deref() else {
                continue;
            };
            let class = match annotation {
                Expr::StringLiteral(s) => Some(s.value.to_str().to_string()),
                Expr::Subscript(s) if dotted(&s.value).is_some_and(|d| d.ends_with("Optional")) => {
                    dotted(&s.slice)
                }
                other => dotted(other),
            };
            let Some(class) = class else { continue };
            let last = class.rsplit('.').next().unwrap_or("");
            let key = self
                .latest_class
                .get(last)
                .or_else(|| self.imports.classes.get(&class));
            if let Some(key) = key {
                self.instances
                    .insert(p.parameter.name.to_string(), key.clone());
            }
        }
    }

    /// `x_adv = x_adv.detach() + alpha * x_adv.grad.sign()`, or `adv =
    /// x + alpha * x.grad.sign()` with `x` bound again later in the same
    /// block (`x = torch.clamp(orig + eta, 0, 1)`): a step of `x` by its own
    /// gradient into a new tensor, an attack's (`attack_steps`), `x` a
    /// tensor updated by hand. A one-off step of a tensor the block never
    /// binds again (FGSM on a batch, `x + eps * x.grad.sign()`) is not one:
    /// that tensor is fresh each time it is stepped.
    fn out_of_place_steps(&mut self, a: &ast::StmtAssign, after: &[Stmt]) {
        let [Expr::Name(target)] = a.targets.as_slice() else {
            return;
        };
        let bound_again = |w: &str| {
            target.id.as_str() == w
                || after.iter().any(|s| match s {
                    Stmt::Assign(b) => b
                        .targets
                        .iter()
                        .any(|t| matches!(t, Expr::Name(n) if n.id.as_str() == w)),
                    _ => false,
                })
        };
        for w in grad_owners(&a.value)
            .into_iter()
            .filter(|w| !w.contains('.'))
        {
            if reads_besides_grad(&a.value, &w) && bound_again(&w) {
                self.parameter_vars.insert(w);
                self.attack_steps.insert(span(a).start);
            }
        }
    }

    /// What an assignment declares: parameters, gradient aliases, optimizer,
    /// scheduler and instance variables, functions given to an `Engine`,
    /// optimizer aliases.
    fn assignment_declarations(&mut self, a: &ast::StmtAssign) {
        // `w.data = w - lr * w.grad` (an adversarial example's
        // `delta.data = ... delta.grad.sign()`): `w` is updated by
        // hand, so `w.grad.zero_()` resets it.
        // `params = [w, b]`: parameters by name.
        for target in &a.targets {
            if dotted(target).is_some_and(|t| t.to_ascii_lowercase().contains("param")) {
                self.parameter_vars.extend(listed_names(&a.value));
            }
        }
        // Only values that read a gradient, or an alias of one.
        let reads_grads = self.mentions(a.value.as_ref(), ".grad") || !self.grad_aliases.is_empty();
        for target in a.targets.iter().filter(|_| reads_grads) {
            if let Some(w) = updated_tensor(target) {
                if self.reads_grad_of(&a.value, &w) {
                    self.parameter_vars.insert(w);
                }
            }
            if let Expr::Name(n) = target {
                // Through other aliases too (`grad_sum =
                // allreduce(p.grad)`, `grad_mean = grad_sum / n`).
                let mut owners = grad_owners(&a.value);
                let mut names = Vec::new();
                names_read(&a.value, &mut names);
                for name in names {
                    if let Some(os) = self.grad_aliases.get(&name) {
                        owners.extend(os.iter().cloned());
                    }
                }
                owners.sort();
                owners.dedup();
                if let [owner] = owners.as_slice() {
                    let bound = self.grad_aliases.entry(n.id.to_string()).or_default();
                    if !bound.contains(owner) {
                        bound.push(owner.clone());
                    }
                }
            }
        }
        for target in &a.targets {
            let Some(t) = dotted(target) else { continue };
            if is_optimizer_constructor(&a.value) {
                let through_variable = || self.built_models.get(&t).cloned();
                if let Some(model) = parameters_owner(&a.value).or_else(through_variable) {
                    self.program.optimizer_models.push((t.clone(), model));
                }
                // `Adam([z], ...)`: the tensors listed are its
                // parameters (`z.grad.zero_()` resets them).
                if let Expr::Call(call) = a.value.as_ref() {
                    let listed = call
                        .arguments
                        .args
                        .first()
                        .or_else(|| call.arguments.find_keyword("params").map(|k| &k.value));
                    if let Some(first) = listed {
                        self.parameter_vars.extend(listed_names(first));
                    }
                }
                self.optimizers.insert(t.clone());
            } else if is_scheduler_constructor(&a.value) {
                self.schedulers.insert(t.clone());
            }
            if let Expr::Call(call) = a.value.as_ref() {
                let callee = dotted(&call.func).unwrap_or_default();
                let last = callee.rsplit('.').next().unwrap_or("");
                if let Some(key) = self.latest_class.get(last) {
                    // An optimizer of the file's own (`class BertAdam(Optimizer)`):
                    // its steps and resets are an optimizer's.
                    let leaf = self
                        .class_asts
                        .get(key)
                        .is_some_and(|c| super::summary::is_leaf_optimizer(self.source, c));
                    if !leaf {
                        self.instances.insert(t.clone(), key.clone());
                    }
                } else if let Some(key) = self.imports.classes.get(&callee) {
                    self.instances.insert(t.clone(), key.clone());
                }
                if last == "Engine" {
                    if let Some(Expr::Name(n)) = call.arguments.args.first() {
                        self.engine_functions.insert(n.id.to_string());
                    }
                }
            }
            if let Some(source) = dotted(&a.value) {
                if !t.contains('.') && t != source && looks_like_optimizer(&source) {
                    self.aliases.insert(t, source);
                }
            }
        }
    }

    /// What a call statement declares: the tensors handed to an update or
    /// updated from their own gradient are parameters, an optimizer given to
    /// a privacy engine, a function given to an `Engine`.
    fn call_declarations(&mut self, e: &ast::StmtExpr) {
        // `sgd([w, b], lr, batch_size)`: the tensors handed to an
        // update are parameters (`w.grad.zero_()` resets them).
        if let Expr::Call(call) = e.value.as_ref() {
            let callee = dotted(&call.func).unwrap_or_default().to_ascii_lowercase();
            let last = callee.rsplit('.').next().unwrap_or("");
            if ["sgd", "optim", "adam", "update", "step"]
                .iter()
                .any(|w| last.contains(w))
            {
                for arg in &call.arguments.args {
                    self.parameter_vars.extend(listed_names(arg));
                }
            }
        }
        // `w.sub_(w.grad * lr)`, `w.data.add_(w.grad, alpha=-lr)`:
        // `w` is a parameter of a hand-written optimizer too.
        if let Expr::Call(call) = e.value.as_ref() {
            if let Expr::Attribute(m) = call.func.as_ref() {
                if matches!(m.attr.id.as_str(), "sub_" | "add_") {
                    if let Some(w) = data_owner(&m.value).and_then(dotted) {
                        let reads = call
                            .arguments
                            .args
                            .iter()
                            .chain(call.arguments.keywords.iter().map(|k| &k.value))
                            .any(|a| self.reads_grad_of(a, &w));
                        if reads {
                            self.parameter_vars.insert(w);
                        }
                    }
                }
            }
        }
        // `privacy_engine.attach(optimizer)`.
        if let Expr::Call(call) = e.value.as_ref() {
            if let Expr::Attribute(m) = call.func.as_ref() {
                let engine =
                    dotted(&m.value).is_some_and(|r| r.to_ascii_lowercase().contains("privacy"));
                if m.attr.id.as_str() == "attach" && engine {
                    // Its step builds `.grad` from the per-sample
                    // gradients of the passes since the last step
                    // and clears those (`Program::private`).
                    if let Some(o) = call.arguments.args.first().and_then(dotted) {
                        if !self.program.private.contains(&o) {
                            self.program.private.push(o);
                        }
                    }
                }
            }
        }
        // `Engine(update)` used directly.
        if let Expr::Call(call) = e.value.as_ref() {
            if dotted(&call.func).is_some_and(|c| c.ends_with("Engine")) {
                if let Some(Expr::Name(n)) = call.arguments.args.first() {
                    self.engine_functions.insert(n.id.to_string());
                }
            }
        }
    }

    /// The declarations in the blocks nested in `stmt`.
    fn nested_declarations(&mut self, stmt: &Stmt, depth: usize) {
        for body in nested_bodies(stmt) {
            self.declarations(body, depth + 1);
        }
    }

    /// Whether `text` names an optimizer (bound to a constructor, or named
    /// like one), not a scheduler.
    pub(super) fn is_optimizer(&self, text: &str) -> bool {
        let scheduler =
            text.to_ascii_lowercase().contains("sched") || self.schedulers.contains(text);
        !scheduler && (self.optimizers.contains(text) || looks_like_optimizer(text))
    }

    /// The object an expression names: an alias resolved.
    pub(super) fn canonical(&self, text: String) -> String {
        self.aliases.get(&text).cloned().unwrap_or(text)
    }

    /// Whether `x.grad` belongs to a parameter: `x` iterates over parameters,
    /// is an attribute path (`model.fc.weight`), or is named like one.
    /// Input gradients (`images.grad`, `delta.grad`) are not the optimizer's.
    pub(super) fn is_parameter(&self, owner: &Expr) -> bool {
        let Some(text) = dotted(owner) else {
            return true;
        };
        if text.contains('.') || self.parameter_vars.contains(&text) {
            return true;
        }
        let lower = text.to_ascii_lowercase();
        ["param", "weight", "bias"]
            .iter()
            .any(|w| lower.contains(w))
            || lower == "p"
    }
}
