//! Statements to nodes: blocks, loops, branches, assignments.

use ruff_python_ast::{self as ast, Expr, Operator, Stmt};
use rustc_hash::FxHashMap as HashMap;

use super::gradients::{
    data_owner, grad_owners, is_grad_attribute, is_optimizer_constructor, mentions_grad,
    parameters_owner, reads_besides_grad, updated_tensor, zeroed_whole_grad,
};
use super::lowerer::Lowerer;
use super::summary::raises_not_implemented;
use super::syntax::MAX_DEPTH;
use super::syntax::{assigned_names, dotted, nested_bodies, span, target_names};
use super::windows::Runs;
use crate::frontend::conditions::{
    classify, counting_iter, is_skip_test, key, none_guarded, optimizer_exists,
};
use crate::ir::{Counter, Event, Node, Reset, Span, Tested};

impl<'s> Lowerer<'s> {
    /// Lowers a block (nothing deeper than [`MAX_DEPTH`]).
    pub(super) fn stmts(&self, body: &[Stmt], depth: usize) -> Vec<Node> {
        let mut out = Vec::new();
        if depth > MAX_DEPTH {
            return out;
        }
        for stmt in body {
            self.stmt(stmt, depth, &mut out);
        }
        out
    }

    /// Lowers one statement into `out`.
    fn stmt(&self, stmt: &Stmt, depth: usize, out: &mut Vec<Node>) {
        match stmt {
            Stmt::FunctionDef(_) | Stmt::ClassDef(_) => {}
            Stmt::Expr(e) => self.expr(&e.value, out),
            Stmt::Assign(a) => self.assign(a, stmt, out),
            Stmt::AnnAssign(a) => {
                if let Some(v) = &a.value {
                    self.expr(v, out);
                    self.assignment(&a.target, v, stmt, out);
                }
            }
            Stmt::AugAssign(a) => self.aug_assign(a, stmt, out),
            Stmt::For(f) => self.for_loop(f, stmt, depth, out),
            Stmt::While(w) => {
                // The test runs at the start of every iteration.
                let mut head = Vec::new();
                self.expr(&w.test, &mut head);
                self.looped(head, Vec::new(), &w.body, &w.orelse, stmt, depth, out);
            }
            Stmt::If(i)
                if i.elif_else_clauses.is_empty()
                    && optimizer_exists(&i.test, |t| self.is_optimizer(t)) =>
            {
                // The optimizer exists whenever it is stepped.
                self.expr(&i.test, out);
                out.extend(self.stmts(&i.body, depth + 1));
            }
            // A test on a parameter that every call of the file leaves `None`.
            Stmt::If(i)
                if (!self.none_params.is_empty() || !self.constants.is_empty())
                    && i.elif_else_clauses.iter().all(|c| c.test.is_none())
                    && self.constant_test(&i.test).is_some() =>
            {
                self.expr(&i.test, out);
                if self.constant_test(&i.test) == Some(true) {
                    out.extend(self.stmts(&i.body, depth + 1));
                } else if let Some(orelse) = i.elif_else_clauses.first() {
                    out.extend(self.stmts(&orelse.body, depth + 1));
                }
            }
            Stmt::If(i) => self.branches(i, depth, out),
            Stmt::With(w) => self.with_block(w, depth, out),
            Stmt::Try(t) => {
                out.extend(self.stmts(&t.body, depth + 1));
                out.extend(self.stmts(&t.orelse, depth + 1));
                out.extend(self.stmts(&t.finalbody, depth + 1));
            }
            Stmt::Match(m) => {
                self.expr(&m.subject, out);
                let branches: Vec<Vec<Node>> = m
                    .cases
                    .iter()
                    .map(|c| self.stmts(&c.body, depth + 1))
                    .collect();
                out.push(Node::If {
                    tests: vec![Tested::default(); branches.len()],
                    at: span(m.subject.as_ref()),
                    branches,
                    exhaustive: false,
                });
            }
            Stmt::Return(r) => {
                if let Some(v) = &r.value {
                    self.expr(v, out);
                }
                out.push(Node::Return);
            }
            // `raise NotImplementedError` stands for a subclass's code: the
            // caller goes on (a base class's loop calling it).
            Stmt::Raise(r) if raises_not_implemented(r) => out.push(Node::Return),
            Stmt::Raise(_) => out.push(Node::Raise),
            Stmt::Break(_) => out.push(Node::Break),
            Stmt::Continue(_) => out.push(Node::Continue),
            _ => {}
        }
    }

    /// `x = value`: the calls of the value, then what the assignment does
    /// (a new leaf tensor, a flag set, a reset or update by hand, a new
    /// optimizer).
    fn assign(&self, a: &ast::StmtAssign, stmt: &Stmt, out: &mut Vec<Node>) {
        self.expr(&a.value, out);
        // `x_adv = x_adv.detach() + alpha * x_adv.grad.sign()`,
        // `adv = images + alpha * images.grad.sign()` (`images` bound again
        // after it): a step on a tensor by hand, into a new tensor (an
        // attack's), its gradient applied.
        if self.attack_steps.contains(&span(stmt).start) {
            for w in grad_owners(&a.value)
                .into_iter()
                .filter(|w| !w.contains('.'))
            {
                if reads_besides_grad(&a.value, &w) {
                    let updater = self.manual_updater_of(w);
                    out.push(Node::Event(Event::Step(updater), span(stmt)));
                }
            }
        }
        // `q = torch.tensor(..., requires_grad=True)`: a new leaf,
        // with no gradient yet.
        // So is a tensor updated by hand made anew (`delta =
        // torch.zeros_like(x).cuda()`, `delta = delta.detach()`): its
        // `.grad` starts empty.
        if let [target] = a.targets.as_slice() {
            if let Some(t) = dotted(target).filter(|t| {
                self.mentions(a.value.as_ref(), "requires_grad")
                    || (made_anew(&a.value) || taken_from_a_container(&a.value))
                        && self.parameter_vars.contains(t.as_str())
            }) {
                out.push(Node::Event(Event::Reset(Reset::NewTensor(t)), span(stmt)));
            }
        }
        // `skip = True`, `self.is_train = False`: a flag later tests read.
        if let (Expr::BooleanLiteral(b), [target]) = (a.value.as_ref(), a.targets.as_slice()) {
            if let Some(name) = dotted(target) {
                out.push(Node::Set(name, b.value));
            }
        }
        for target in &a.targets {
            self.assignment(target, &a.value, stmt, out);
            // A new optimizer over new tensors starts with no gradient
            // history; one over a model's parameters clears nothing.
            if let (Some(t), true) = (dotted(target), is_optimizer_constructor(&a.value)) {
                let model =
                    parameters_owner(&a.value).or_else(|| self.built_models.get(&t).cloned());
                let reset = match model {
                    None => Reset::NewOptimizer(t),
                    Some(model) => Reset::NewModelOptimizer {
                        optimizer: t,
                        model,
                    },
                };
                out.push(Node::Event(Event::Reset(reset), span(stmt)));
            }
        }
    }

    /// `w -= lr * w.grad` (an update by hand), `p.grad *= mom` (a reset).
    fn aug_assign(&self, a: &ast::StmtAugAssign, stmt: &Stmt, out: &mut Vec<Node>) {
        self.expr(&a.value, out);
        let reads_own_grad = || {
            data_owner(&a.target)
                .and_then(dotted)
                .is_some_and(|w| self.reads_grad_of(&a.value, &w))
        };
        // Descent (`w -= lr * w.grad`), or ascent on a tensor's own
        // gradient (`x.data += lr * x.grad`: a fooling image, a dream).
        let descent = a.op == Operator::Sub && (mentions_grad(&a.value) || reads_own_grad());
        let ascent = a.op == Operator::Add && reads_own_grad();
        if (descent || ascent) && !is_grad_attribute(&a.target) {
            let updater = self.manual_updater(&a.target, &a.value);
            out.push(Node::Event(Event::Step(updater), span(stmt)));
        }
        // `p.grad *= mom` decays what the passes left on purpose
        // (momentum kept in the gradients): managed by hand, like
        // `p.grad = g`, so for the analysis a reset.
        if a.op == Operator::Mult {
            if let Expr::Attribute(t) = a.target.as_ref() {
                if t.attr.id.as_str() == "grad" {
                    if let Some(reset) = self.grad_reset(&t.value) {
                        out.push(Node::Event(reset, span(stmt)));
                    }
                }
            }
        }
    }

    /// A `for` loop, with the counters it advances (`for i in range(n)`).
    fn for_loop(&self, f: &ast::StmtFor, stmt: &Stmt, depth: usize, out: &mut Vec<Node>) {
        self.expr(&f.iter, out);
        // `for _ in range(1):` runs its body once: no loop (unless the body
        // leaves it early, which a plain block cannot say).
        if runs_once(&f.iter) && f.orelse.is_empty() && !leaves_early(&f.body) {
            out.extend(self.stmts(&f.body, depth + 1));
            return;
        }
        let mut counters = Vec::new();
        let mut pushed_run = false;
        if let Some(call) = self.counting_call(&f.iter, span(stmt)) {
            let settable = matches!(call.func.as_ref(), Expr::Name(n) if n.id.as_str() == "range")
                && matches!(
                    call.arguments.args.as_ref(),
                    [Expr::Name(_) | Expr::Attribute(_)]
                );
            if settable {
                self.settable_runs.borrow_mut().push(span(stmt));
            }
            if let Some(start) = counting_iter(call) {
                let first = match f.target.as_ref() {
                    Expr::Tuple(t) => t.elts.first(),
                    e => Some(e),
                };
                if let Some(name) = first.and_then(dotted) {
                    // `for i in range(n)`: `i == 0` is the first
                    // iteration, `i == n - 1` the last.
                    if start == Some(0) {
                        if let Some(n) = run_length(self.source, call) {
                            self.run_lengths.borrow_mut().push((name.clone(), n));
                            pushed_run = true;
                        }
                    }
                    let picks_models = calls_one_picked_by(&f.body, &name);
                    counters.push(Counter {
                        picks_models,
                        ..Counter::new(name, start)
                    });
                }
            }
        }
        // Whatever the loop binds moves on each iteration
        // (`step.number` of a step object).
        let mut targets = Vec::new();
        target_names(&f.target, &mut targets);
        for name in targets {
            if !counters.iter().any(|c| c.name == name) {
                // `for m in modalities: models[m].parameters() ...
                // optimizers[m].step()` picks as a counter does.
                let picks_models = calls_one_picked_by(&f.body, &name);
                counters.push(Counter {
                    picks_models,
                    ..Counter::new(name, None)
                });
            }
        }
        let over = match f.target.as_ref() {
            Expr::Name(n) => self
                .optimizers_iterated(&f.iter)
                .map(|o| (n.id.to_string(), o)),
            _ => None,
        };
        let keyed = self.each_by_key(f, stmt);
        let pushed = usize::from(over.is_some()) + usize::from(keyed.is_some());
        self.optimizer_loop_vars
            .borrow_mut()
            .extend(over.into_iter().chain(keyed));
        // A loop over optimizers that only resets or steps them is one
        // reset (step) of each, not a repetition in time: a block.
        let once_each = pushed > 0 && !f.body.iter().any(|s| self.mentions(s, "backward"));
        if once_each {
            out.extend(self.stmts(&f.body, depth + 1));
            out.extend(self.stmts(&f.orelse, depth + 1));
        } else {
            self.looped(Vec::new(), counters, &f.body, &f.orelse, stmt, depth, out);
        }
        for _ in 0..pushed {
            self.optimizer_loop_vars.borrow_mut().pop();
        }
        if pushed_run {
            self.run_lengths.borrow_mut().pop();
        }
    }

    /// A loop over the keys of a container named for optimizers that
    /// resets or steps what each key holds (`for k in self.optim:
    /// self.optim[k].zero_grad()`, `for i in range(len(opts)):
    /// opts[i].step()`): `X[k]` is then each optimizer held in `X`, `X[*]`.
    fn each_by_key(&self, f: &ast::StmtFor, stmt: &Stmt) -> Option<(String, Vec<String>)> {
        let Expr::Name(key) = f.target.as_ref() else {
            return None;
        };
        let container = match f.iter.as_ref() {
            Expr::Call(c) => match (c.func.as_ref(), c.arguments.args.as_ref()) {
                (Expr::Attribute(a), []) if a.attr.id.as_str() == "keys" => a.value.as_ref(),
                (Expr::Name(n), [Expr::Call(len)]) if n.id.as_str() == "range" => {
                    match (len.func.as_ref(), len.arguments.args.as_ref()) {
                        (Expr::Name(l), [x]) if l.id.as_str() == "len" => x,
                        _ => return None,
                    }
                }
                _ => return None,
            },
            e => e,
        };
        let container = dotted(container)?;
        // A container of optimizers by its name (`self.optim`, `opts`), not
        // one of models (`self.nets[k].zero_grad()` resets a model).
        let last = container.rsplit('.').next().unwrap_or(&container);
        let singular = last.strip_suffix('s').unwrap_or(last);
        if !crate::frontend::looks_like_optimizer(last)
            && !crate::frontend::looks_like_optimizer(singular)
        {
            return None;
        }
        let each = format!("{container}[{}]", key.id);
        let body = self.text(stmt);
        [".zero_grad(", ".step("]
            .iter()
            .any(|m| body.contains(&format!("{each}{m}")))
            .then(|| {
                (
                    self.canonical(each),
                    vec![format!("{}[*]", self.canonical(container))],
                )
            })
    }

    /// What a loop over optimizers runs over: `[opt_g, opt_d]` (each an
    /// optimizer), or a container named like optimizers (`self.optims`,
    /// `optimizers.values()`): every optimizer it holds, `X[*]`.
    fn optimizers_iterated(&self, iter: &Expr) -> Option<Vec<String>> {
        match iter {
            Expr::List(ast::ExprList { elts, .. }) | Expr::Tuple(ast::ExprTuple { elts, .. }) => {
                let names: Option<Vec<String>> = elts
                    .iter()
                    .map(|e| {
                        dotted(e)
                            .map(|d| self.canonical(d))
                            .filter(|d| self.is_optimizer(d))
                    })
                    .collect();
                names.filter(|n| !n.is_empty())
            }
            Expr::Call(c) if c.arguments.is_empty() => match c.func.as_ref() {
                Expr::Attribute(a) if a.attr.id.as_str() == "values" => {
                    self.optimizers_iterated(&a.value)
                }
                _ => None,
            },
            e => {
                let container = dotted(e)?;
                let last = container
                    .rsplit('.')
                    .next()
                    .unwrap_or(&container)
                    .to_ascii_lowercase();
                // A plural name: `optims`, `optimizers`, `opts`.
                (last.ends_with('s')
                    && crate::frontend::looks_like_optimizer(&last[..last.len() - 1]))
                .then(|| vec![format!("{}[*]", self.canonical(container))])
            }
        }
    }

    /// What a test tells of the classified conditions, where it stands.
    pub(super) fn classify_test(&self, test: &Expr) -> Tested {
        let named = |n: &str| self.named.get(n).copied();
        // Borrowed only while a test is classified (no lowering then).
        let run_length = |v: &str| {
            self.run_lengths
                .borrow()
                .iter()
                .rev()
                .find(|(name, _)| name == v)
                .map(|(_, n)| n.clone())
        };
        // Borrowed only while a test is classified, too.
        let equality = |name: &str, at: usize| {
            self.equality_windows
                .borrow()
                .last()
                .and_then(|frame| frame.iter().find(|w| w.name == name))
                .map(|w| w.at(at))
        };
        let length = |n: &str| {
            self.named_lengths
                .get(n)
                .map(|e| crate::frontend::conditions::key(self.source, e))
        };
        classify(self.source, test, &named, &run_length, &length, &equality)
    }

    /// An `if` with its `elif`s and `else`, each test classified.
    fn branches(&self, i: &ast::StmtIf, depth: usize, out: &mut Vec<Node>) {
        // `if True:` (`if 1:`) always runs its body; `if False:` with no
        // other branch, never (code switched off by hand).
        let literal = match i.test.as_ref() {
            Expr::BooleanLiteral(b) => Some(b.value),
            Expr::NumberLiteral(n) => match &n.value {
                ast::Number::Int(v) => v.as_u8().map(|v| v != 0),
                _ => None,
            },
            _ => None,
        };
        match literal {
            Some(true) => return out.extend(self.stmts(&i.body, depth + 1)),
            Some(false) if i.elif_else_clauses.is_empty() => return,
            _ => {}
        }
        self.expr(&i.test, out);
        let mut branches = vec![self.stmts(&i.body, depth + 1)];
        let mut tests =
            vec![self.resets_what_exists(self.classify_test(&i.test), &i.test, &i.body)];
        let mut exhaustive = false;
        for clause in &i.elif_else_clauses {
            if let Some(test) = &clause.test {
                // An elif's test runs only when the branches above did not.
                let mut branch = Vec::new();
                self.expr(test, &mut branch);
                branch.extend(self.stmts(&clause.body, depth + 1));
                branches.push(branch);
                tests.push(self.resets_what_exists(self.classify_test(test), test, &clause.body));
            } else {
                exhaustive = true;
                branches.push(self.stmts(&clause.body, depth + 1));
                tests.push(Tested::default());
            }
        }
        out.push(Node::If {
            branches,
            exhaustive,
            tests,
            at: span(i.test.as_ref()),
        });
    }

    /// A `with` block: `accelerator.accumulate(...)` makes it a window.
    fn with_block(&self, w: &ast::StmtWith, depth: usize, out: &mut Vec<Node>) {
        let mut accumulate = false;
        for item in &w.items {
            self.expr(&item.context_expr, out);
            if let Expr::Call(call) = &item.context_expr {
                if let Expr::Attribute(a) = call.func.as_ref() {
                    accumulate |= a.attr.id.as_str() == "accumulate";
                }
            }
        }
        let body = self.stmts(&w.body, depth + 1);
        if accumulate {
            out.push(Node::Accumulate(body));
        } else {
            out.extend(body);
        }
    }

    /// A `for` or `while`: the loop (`head` runs at the start of each
    /// iteration), then its `else`.
    #[allow(clippy::too_many_arguments)]
    fn looped(
        &self,
        mut head: Vec<Node>,
        mut counters: Vec<Counter>,
        body: &[Stmt],
        orelse: &[Stmt],
        stmt: &Stmt,
        depth: usize,
        out: &mut Vec<Node>,
    ) {
        // The body's equality counters; a nested loop's body hides them.
        let windows = self.equality_windows(body, Runs::Loop(span(stmt)));
        let persisting: Vec<String> = windows
            .iter()
            .filter(|w| w.persists)
            .map(|w| w.name.clone())
            .collect();
        self.equality_windows.borrow_mut().push(windows);
        head.extend(self.stmts(body, depth + 1));
        self.equality_windows.borrow_mut().pop();
        let mut assigned = Vec::new();
        assigned_names(body, &mut assigned, 0);
        if let Stmt::For(f) = stmt {
            target_names(&f.target, &mut assigned);
        }
        incremented(body, &mut counters, 0);
        for c in counters.iter_mut() {
            c.persists = persisting.contains(&c.name);
        }
        // `with accelerator.accumulate(...)` in the body counts micro-steps:
        // this loop advances accelerate's window.
        if contains_accumulate(&head) {
            // A new run of the loop starts a new window (accelerate closes
            // one at the end of a dataloader).
            counters.push(Counter::new(crate::ir::ACCELERATE_COUNTER.into(), Some(0)));
        }
        out.push(Node::Loop {
            body: head,
            span: span(stmt),
            assigned,
            counters,
        });
        out.extend(self.stmts(orelse, depth + 1));
    }

    /// `p.grad = None` resets; `p.data = p.data - lr * p.grad` updates.
    fn assignment(&self, target: &Expr, value: &Expr, stmt: &Stmt, out: &mut Vec<Node>) {
        if let Expr::Attribute(a) = target {
            let attr = a.attr.id.as_str();
            // `p.grad = None` clears; `p.grad = g` replaces what backward
            // passes left (a gradient summed or corrected by hand): for the
            // analysis, a reset too.
            if attr == "grad" {
                if let Some(reset) = self.grad_reset(&a.value) {
                    if !value.is_none_literal_expr() && !zeros(value) {
                        self.grad_writes.borrow_mut().push(span(stmt));
                    }
                    out.push(Node::Event(reset, span(stmt)));
                }
            } else if attr == "data"
                && !is_grad_attribute(target)
                && (mentions_grad(value)
                    || dotted(&a.value).is_some_and(|w| self.reads_grad_of(value, &w)))
            {
                // Or through a name bound to its gradient (`grad =
                // delta.grad.detach()`, then `delta.data = ... grad ...`).
                let updater = self.manual_updater(&a.value, value);
                out.push(Node::Event(Event::Step(updater), span(stmt)));
            }
        } else if let Some(owner) = zeroed_whole_grad(target, value) {
            // `perturb.grad[:] = 0` clears it in place, as `zero_()` does.
            if let Some(reset) = self.grad_reset(owner) {
                out.push(Node::Event(reset, span(stmt)));
            }
        } else if let Some(w) = updated_tensor(target) {
            // `x[:] = x + lr * x.grad.sign()`, `delta.data[i] = ... grad ...`.
            if self.reads_grad_of(value, &w) {
                let updater = self.manual_updater_of(w);
                out.push(Node::Event(Event::Step(updater), span(stmt)));
            }
        }
    }
}

impl<'s> Lowerer<'s> {
    /// A branch that resets the gradients of the tensors it tests exist
    /// (`elif params is not None: for p in params: p.grad.zero_()`): when
    /// they do not, there are no gradients of theirs to pile up, so for
    /// the analysis the test holds, as `p.grad is not None` does.
    fn resets_what_exists(&self, tested: Tested, test: &Expr, body: &[Stmt]) -> Tested {
        // `X is not None`, alone or joined by `and` with `... .grad is not
        // None`: only such tests are read again (most are not).
        let operands = match test {
            Expr::BoolOp(b) if b.op == ast::BoolOp::And => &b.values[..],
            e => std::slice::from_ref(e),
        };
        let Some(guarded) = operands
            .iter()
            .map(none_guarded)
            .collect::<Option<Vec<&Expr>>>()
        else {
            return tested;
        };
        // The tensors whose gradients a loop of the branch resets.
        let reset_over: Vec<String> = body
            .iter()
            .filter_map(|stmt| {
                let Stmt::For(f) = stmt else { return None };
                let Expr::Name(v) = f.target.as_ref() else {
                    return None;
                };
                let grad = format!("{}.grad", v.id);
                let resets = f.body.iter().any(|s| {
                    let r = span(s);
                    self.source.get(r.start..r.end).is_some_and(|t| {
                        t.starts_with(&grad) && (t.contains("zero_()") || t.contains("None"))
                    })
                });
                resets.then(|| dotted(&f.iter)).flatten()
            })
            .collect();
        let exists = |x: &Expr| {
            matches!(x, Expr::Attribute(a) if a.attr.id.as_str() == "grad")
                || dotted(x).is_some_and(|d| reset_over.contains(&d))
        };
        if reset_over.is_empty() || !guarded.into_iter().all(exists) {
            return tested;
        }
        Tested::single(crate::ir::Test {
            cond: crate::ir::Cond {
                key: format!("{}:exists", key(self.source, test)),
                class: crate::ir::CondClass::Always,
            },
            negated: false,
        })
    }

    /// The call a loop iterates, seen through a progress bar
    /// (`tqdm(enumerate(loader))`) and through a local bound once, before
    /// the loop at `at`, in the function around it (`pbar =
    /// tqdm(enumerate(loader)); for i, batch in pbar:`).
    fn counting_call<'a>(&'a self, iter: &'a Expr, at: Span) -> Option<&'a ast::ExprCall>
    where
        's: 'a,
    {
        let call = match iter {
            Expr::Call(call) => call,
            Expr::Name(n) => {
                let body = enclosing_function(self.module_body, at, 0)?;
                let mut names = Vec::new();
                assigned_names(body, &mut names, 0);
                if names.iter().filter(|b| *b == n.id.as_str()).count() != 1 {
                    return None;
                }
                match single_assignment(body, n.id.as_str(), at, 0)? {
                    Expr::Call(call) => call,
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(through_progress_bar(call))
    }
}

/// `tqdm(x, ...)`, `tqdm.tqdm(x)`, `track(x)`, `progress_bar(x)`: the call
/// `x` when it is one, else `call`.
fn through_progress_bar(call: &ast::ExprCall) -> &ast::ExprCall {
    let name = dotted(&call.func).unwrap_or_default();
    let last = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    let wraps = last.contains("tqdm") || last.contains("progress") || last == "track";
    match call.arguments.args.first() {
        Some(Expr::Call(inner)) if wraps => inner,
        _ => call,
    }
}

/// The body of the innermost function of `body` holding `at`.
fn enclosing_function(body: &[Stmt], at: Span, depth: usize) -> Option<&[Stmt]> {
    if depth > MAX_DEPTH {
        return None;
    }
    let holder = body.iter().find(|stmt| {
        let s = span(*stmt);
        s.start <= at.start && at.end <= s.end
    })?;
    match holder {
        Stmt::FunctionDef(f) => enclosing_function(&f.body, at, depth + 1).or(Some(&f.body[..])),
        Stmt::ClassDef(c) => enclosing_function(&c.body, at, depth + 1),
        other => nested_bodies(other)
            .into_iter()
            .find_map(|b| enclosing_function(b, at, depth + 1)),
    }
}

/// The value of the plain assignment `name = value` in `body` (nested
/// blocks, not nested functions) that ends before `at`.
fn single_assignment<'b>(body: &'b [Stmt], name: &str, at: Span, depth: usize) -> Option<&'b Expr> {
    if depth > MAX_DEPTH {
        return None;
    }
    body.iter().find_map(|stmt| match stmt {
        Stmt::Assign(a)
            if span(stmt).end <= at.start
                && matches!(a.targets.as_slice(), [Expr::Name(t)] if t.id.as_str() == name) =>
        {
            Some(a.value.as_ref())
        }
        Stmt::FunctionDef(_) | Stmt::ClassDef(_) => None,
        _ => nested_bodies(stmt)
            .into_iter()
            .find_map(|b| single_assignment(b, name, at, depth + 1)),
    })
}

/// The number of values `range(n)` (from 0) or `enumerate(x)` yields, as a
/// condition key's text (`n`, `len(x)`).
fn run_length(source: &str, call: &ast::ExprCall) -> Option<String> {
    let Expr::Name(f) = call.func.as_ref() else {
        return None;
    };
    let args = &call.arguments.args;
    let strip = |e: &Expr| crate::frontend::conditions::key(source, e);
    match f.id.as_str() {
        "range" if args.len() == 1 => Some(strip(&args[0])),
        "enumerate" if !args.is_empty() => {
            Some(format!("len({})", strip(progress_bar_of(&args[0]))))
        }
        _ => None,
    }
}

/// What a progress bar runs over (`tqdm(loader, ...)`: `loader`, as long);
/// anything else is itself.
fn progress_bar_of(expr: &Expr) -> &Expr {
    match expr {
        Expr::Call(c)
            if dotted(&c.func).is_some_and(|f| f == "tqdm" || f.ends_with(".tqdm"))
                && !c.arguments.args.is_empty() =>
        {
            &c.arguments.args[0]
        }
        e => e,
    }
}

/// Whether `nodes` hold an `accelerator.accumulate` block outside nested
/// loops.
fn contains_accumulate(nodes: &[Node]) -> bool {
    nodes.iter().any(|n| match n {
        Node::Accumulate(_) => true,
        Node::If { branches, .. } => branches.iter().any(|b| contains_accumulate(b)),
        _ => false,
    })
}

/// Local names bound exactly once in `body` (nested blocks included) to
/// a comparison, a `not` or a boolean operation.
pub(super) fn named_tests(body: &[Stmt]) -> HashMap<String, &Expr> {
    named_values(body, &|value| {
        matches!(value, Expr::Compare(_) | Expr::BoolOp(_) | Expr::UnaryOp(_))
            || is_skip_test(value)
    })
}

/// Local names bound exactly once in `body` to a length (`n = len(loader)`).
pub(super) fn named_lengths(body: &[Stmt]) -> HashMap<String, &Expr> {
    named_values(
        body,
        &|value| matches!(value, Expr::Call(c) if matches!(c.func.as_ref(), Expr::Name(f) if f.id.as_str() == "len")),
    )
}

/// Local names bound exactly once in `body` (nested blocks included) to a
/// value `wanted` accepts.
fn named_values<'e>(body: &'e [Stmt], wanted: &dyn Fn(&Expr) -> bool) -> HashMap<String, &'e Expr> {
    fn walk<'e>(
        body: &'e [Stmt],
        wanted: &dyn Fn(&Expr) -> bool,
        counts: &mut HashMap<String, (usize, Option<&'e Expr>)>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        for stmt in body {
            match stmt {
                Stmt::Assign(a) => {
                    for t in &a.targets {
                        let mut names = Vec::new();
                        target_names(t, &mut names);
                        let test = matches!(t, Expr::Name(_)) && wanted(&a.value);
                        for n in names {
                            let e = counts.entry(n).or_insert((0, None));
                            e.0 += 1;
                            e.1 = test.then_some(a.value.as_ref());
                        }
                    }
                }
                Stmt::AugAssign(a) => {
                    let mut names = Vec::new();
                    target_names(&a.target, &mut names);
                    for n in names {
                        counts.entry(n).or_insert((0, None)).0 += 2;
                    }
                }
                Stmt::FunctionDef(_) | Stmt::ClassDef(_) => {}
                _ => {
                    for b in nested_bodies(stmt) {
                        walk(b, wanted, counts, depth + 1);
                    }
                }
            }
        }
    }
    let mut counts = HashMap::default();
    walk(body, wanted, &mut counts, 0);
    counts
        .into_iter()
        .filter_map(|(n, (count, e))| (count == 1).then_some((n, e?)))
        .collect()
}

/// Counters `x += 1` in `body`, not in nested loops.
fn incremented(body: &[Stmt], out: &mut Vec<Counter>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for stmt in body {
        match stmt {
            Stmt::AugAssign(a)
                if a.op == Operator::Add
                    && matches!(a.value.as_ref(), Expr::NumberLiteral(n)
                        if matches!(&n.value, ast::Number::Int(i) if i.as_i64() == Some(1))) =>
            {
                if let Some(name) = dotted(&a.target) {
                    if !out.iter().any(|c| c.name == name) {
                        out.push(Counter::new(name, None));
                    }
                }
            }
            Stmt::For(_) | Stmt::While(_) | Stmt::FunctionDef(_) | Stmt::ClassDef(_) => {}
            _ => {
                for b in nested_bodies(stmt) {
                    incremented(b, out, depth + 1);
                }
            }
        }
    }
}

/// Whether `value` is an element of a container (`deltas[batch["index"]]`):
/// a tensor updated by hand and bound so in each iteration is, for the
/// analysis, another tensor each time (a per-sample perturbation), with
/// its own gradient.
fn taken_from_a_container(value: &Expr) -> bool {
    matches!(value, Expr::Subscript(_))
}

/// Whether a loop's iterable is `range(1)`: one iteration.
fn runs_once(iter: &Expr) -> bool {
    let Expr::Call(call) = iter else { return false };
    let one = |e: &Expr| matches!(e, Expr::NumberLiteral(n) if n.value.as_int().and_then(|i| i.as_u64()) == Some(1));
    matches!(call.func.as_ref(), Expr::Name(n) if n.id.as_str() == "range")
        && call.arguments.keywords.is_empty()
        && matches!(call.arguments.args.as_ref(), [e] if one(e))
}

/// Whether `body` has a `break` or `continue` of its own (not of a loop
/// nested in it).
fn leaves_early(body: &[Stmt]) -> bool {
    body.iter().any(|stmt| match stmt {
        Stmt::Break(_) | Stmt::Continue(_) => true,
        Stmt::For(_) | Stmt::While(_) | Stmt::FunctionDef(_) | Stmt::ClassDef(_) => false,
        _ => nested_bodies(stmt).into_iter().any(leaves_early),
    })
}

/// Whether `value` is a tensor made anew, with no gradient: a creation
/// function's result (`torch.zeros_like(x)`), a copy (`x.detach()`,
/// `x.clone()`), or a method of one (`torch.zeros_like(x).cuda()`).
fn made_anew(value: &Expr) -> bool {
    const METHODS: [&str; 6] = [
        "detach",
        "clone",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
    ];
    const FUNCTIONS: [&str; 16] = [
        "clamp",
        "clip",
        "zeros",
        "zeros_like",
        "ones",
        "ones_like",
        "rand",
        "rand_like",
        "randn",
        "randn_like",
        "empty",
        "empty_like",
        "full",
        "full_like",
        "tensor",
        "randint",
    ];
    // Arithmetic makes a new tensor (`(noise - 0.5) * scale`).
    if matches!(value, Expr::BinOp(_))
        || matches!(value, Expr::UnaryOp(u) if u.op == ast::UnaryOp::USub)
    {
        return true;
    }
    let mut value = value;
    for _ in 0..MAX_DEPTH {
        let Expr::Call(call) = value else {
            return false;
        };
        match call.func.as_ref() {
            Expr::Attribute(a) if METHODS.contains(&a.attr.id.as_str()) => return true,
            Expr::Attribute(a)
                if FUNCTIONS.contains(&a.attr.id.as_str())
                    && matches!(a.value.as_ref(), Expr::Name(n) if n.id.as_str() == "torch") =>
            {
                return true
            }
            Expr::Attribute(a) => value = a.value.as_ref(),
            _ => return false,
        }
    }
    false
}

/// Whether `body` calls something picked by `name` from a list, other than
/// an optimizer's or a loss's method (`models[i](x)`, `nets[i].encode(x)`).
fn calls_one_picked_by(body: &[Stmt], name: &str) -> bool {
    use ruff_python_ast::visitor::{walk_expr, walk_stmt, Visitor};
    struct Finder<'n> {
        name: &'n str,
        found: bool,
    }
    impl Finder<'_> {
        fn picked(&self, e: &Expr) -> bool {
            matches!(e, Expr::Subscript(s) if matches!(s.slice.as_ref(), Expr::Name(n) if n.id.as_str() == self.name))
        }
    }
    impl<'a> Visitor<'a> for Finder<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Call(call) = expr {
                let picked = match call.func.as_ref() {
                    // Not a tensor's or a container's own method
                    // (`batch[k].to(device)`).
                    Expr::Attribute(a) => {
                        !matches!(
                            a.attr.id.as_str(),
                            "step"
                                | "zero_grad"
                                | "backward"
                                | "to"
                                | "cuda"
                                | "cpu"
                                | "float"
                                | "long"
                                | "size"
                                | "view"
                                | "reshape"
                                | "item"
                                | "detach"
                                | "append"
                                | "extend"
                                | "get"
                                | "items"
                                | "keys"
                                | "values"
                        ) && self.picked(&a.value)
                    }
                    f => self.picked(f),
                };
                self.found |= picked;
            }
            if !self.found {
                walk_expr(self, expr);
            }
        }
        fn visit_stmt(&mut self, stmt: &'a Stmt) {
            if !self.found {
                walk_stmt(self, stmt);
            }
        }
    }
    let mut finder = Finder { name, found: false };
    for stmt in body {
        finder.visit_stmt(stmt);
    }
    finder.found
}

/// `0`, `torch.zeros_like(p)`, `torch.zeros(...)`, `p.grad * 0`: a gradient
/// written as zeros (the step after it applies nothing).
fn zeros(value: &Expr) -> bool {
    match value {
        Expr::NumberLiteral(n) => {
            matches!(&n.value, ast::Number::Int(i) if i.as_u8() == Some(0))
                || matches!(&n.value, ast::Number::Float(f) if *f == 0.0)
        }
        Expr::Call(call) => dotted(&call.func).is_some_and(|f| {
            let last = f.rsplit('.').next().unwrap_or("");
            matches!(last, "zeros_like" | "zeros" | "zero_")
        }),
        Expr::BinOp(b) if b.op == Operator::Mult => zeros(&b.left) || zeros(&b.right),
        _ => false,
    }
}
