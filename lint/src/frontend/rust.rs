//! Rust (candle, gradguard, tch-rs) to the model, with syn.

use std::collections::HashSet;

use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{Block, Expr, ImplItem, Item, Pat, Stmt, TraitItem};

use super::{looks_like_optimizer, SyntaxError, OPTIMIZER_TYPES};
use crate::diagnostic::LineIndex;
use crate::ir::{
    Cond, CondClass, Event, Function, Node, Program, Reset, Span, Test, Tested, Updater,
};

const MAX_DEPTH: usize = 100;

/// Parses and lowers a Rust file.
pub fn lower(source: &str) -> Result<Program, SyntaxError> {
    let index = LineIndex::new(source);
    let file = syn::parse_file(source).map_err(|e| {
        let start = e.span().start();
        SyntaxError {
            message: e.to_string(),
            offset: index.offset(start.line, start.column),
        }
    })?;
    let mut fns = Vec::new();
    collect_fns(&file.items, &mut fns);
    let mut lowerer = Lowerer {
        source: source.to_string(),
        index,
        program: Program::default(),
        optimizers: HashSet::new(),
        stores: stores(&file),
        functions: fns.iter().map(|(n, _)| n.clone()).collect(),
        loop_vars: std::cell::RefCell::new(Vec::new()),
    };
    for (_, block) in &fns {
        lowerer.find_optimizers(block);
    }
    for (name, block) in &fns {
        let body = lowerer.block(block, 0);
        lowerer.program.functions.push(Function {
            name: name.clone(),
            body,
            assigned: Vec::new(),
            params: Vec::new(),
            keywords: Vec::new(),
        });
    }
    Ok(lowerer.program)
}

fn collect_fns<'a>(items: &'a [Item], out: &mut Vec<(String, &'a Block)>) {
    for item in items {
        match item {
            Item::Fn(f) => out.push((f.sig.ident.to_string(), &f.block)),
            Item::Impl(i) => {
                for it in &i.items {
                    if let ImplItem::Fn(f) = it {
                        out.push((f.sig.ident.to_string(), &f.block));
                    }
                }
            }
            Item::Trait(t) => {
                for it in &t.items {
                    if let TraitItem::Fn(f) = it {
                        if let Some(b) = &f.default {
                            out.push((f.sig.ident.to_string(), b));
                        }
                    }
                }
            }
            Item::Mod(m) => {
                if let Some((_, items)) = &m.content {
                    collect_fns(items, out);
                }
            }
            _ => {}
        }
    }
}

struct Lowerer {
    source: String,
    index: LineIndex,
    program: Program,
    optimizers: HashSet<String>,
    /// Names of `GradStore`s: bound from a backward pass or to a
    /// `GradStore`, or parameters of that type.
    stores: HashSet<String>,
    functions: HashSet<String>,
    /// Names bound by the `for` patterns around the code being lowered.
    loop_vars: std::cell::RefCell<Vec<String>>,
}

/// `a.b.c` for paths and fields.
fn dotted(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Path(p) => Some(
            p.path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect::<Vec<_>>()
                .join("::"),
        ),
        Expr::Field(f) => {
            let member = match &f.member {
                syn::Member::Named(i) => i.to_string(),
                syn::Member::Unnamed(i) => i.index.to_string(),
            };
            Some(format!("{}.{member}", dotted(&f.base)?))
        }
        Expr::Reference(r) => dotted(&r.expr),
        Expr::Paren(p) => dotted(&p.expr),
        _ => None,
    }
}

/// Strips `?`, `.unwrap()`, `.expect(..)`, `&`, parentheses.
fn unwrapped(expr: &Expr) -> &Expr {
    match expr {
        Expr::Try(t) => unwrapped(&t.expr),
        Expr::Reference(r) => unwrapped(&r.expr),
        Expr::Paren(p) => unwrapped(&p.expr),
        Expr::MethodCall(m) if matches!(m.method.to_string().as_str(), "unwrap" | "expect") => {
            unwrapped(&m.receiver)
        }
        _ => expr,
    }
}

/// Whether `expr` calls `.backward()` with no argument (candle: a fresh store).
fn calls_backward(expr: &Expr) -> bool {
    struct Finder(bool);
    impl<'a> Visit<'a> for Finder {
        fn visit_expr_method_call(&mut self, m: &'a syn::ExprMethodCall) {
            if m.method == "backward" && m.args.is_empty() {
                self.0 = true;
            }
            syn::visit::visit_expr_method_call(self, m);
        }
        fn visit_expr_closure(&mut self, _: &'a syn::ExprClosure) {}
    }
    let mut f = Finder(false);
    f.visit_expr(expr);
    f.0
}

fn mentions_optimizer_type(expr: &Expr) -> bool {
    struct Finder(bool);
    impl<'a> Visit<'a> for Finder {
        fn visit_ident(&mut self, i: &'a proc_macro2::Ident) {
            let s = i.to_string();
            if OPTIMIZER_TYPES.contains(&s.as_str()) {
                self.0 = true;
            }
        }
    }
    let mut f = Finder(false);
    f.visit_expr(expr);
    f.0
}

impl Lowerer {
    fn span(&self, node: &impl Spanned) -> Span {
        let s = node.span();
        let (a, b) = (s.start(), s.end());
        Span::new(
            self.index.offset(a.line, a.column),
            self.index.offset(b.line, b.column),
        )
    }

    fn find_optimizers(&mut self, block: &Block) {
        struct Finder<'l>(&'l mut HashSet<String>);
        impl<'a> Visit<'a> for Finder<'_> {
            fn visit_local(&mut self, l: &'a syn::Local) {
                if let (Some(name), Some(init)) = (pat_name(&l.pat), &l.init) {
                    if mentions_optimizer_type(&init.expr) {
                        self.0.insert(name);
                    }
                }
                syn::visit::visit_local(self, l);
            }
        }
        Finder(&mut self.optimizers).visit_block(block);
    }

    fn is_optimizer(&self, text: &str) -> bool {
        self.optimizers.contains(text) || looks_like_optimizer(text)
    }

    fn block(&self, block: &Block, depth: usize) -> Vec<Node> {
        let mut out = Vec::new();
        if depth > MAX_DEPTH {
            return out;
        }
        for stmt in &block.stmts {
            match stmt {
                Stmt::Local(l) => {
                    if let Some(init) = &l.init {
                        self.expr(&init.expr, depth, false, &mut out);
                        if let Some((_, diverge)) = &init.diverge {
                            self.expr(diverge, depth, false, &mut out);
                        }
                        if let Some(name) = pat_name(&l.pat) {
                            out.push(self.binding(name, &init.expr, l));
                        }
                    }
                }
                Stmt::Expr(e, _) => self.expr(e, depth, true, &mut out),
                Stmt::Item(_) | Stmt::Macro(_) => {}
            }
        }
        out
    }

    /// `x = ...`: a new `GradStore` in `x` (from a backward pass or not).
    fn binding(&self, name: String, value: &Expr, at: &impl Spanned) -> Node {
        let event = if calls_backward(value) {
            Event::BindStore(name)
        } else {
            Event::Reset(Reset::Store(name))
        };
        Node::Event(event, self.span(at))
    }

    /// Lowers `expr`; `statement` tells that its value is discarded.
    fn expr(&self, expr: &Expr, depth: usize, statement: bool, out: &mut Vec<Node>) {
        if depth > MAX_DEPTH {
            return;
        }
        let d = depth + 1;
        match expr {
            Expr::If(i) => self.if_expr(i, d, out),
            Expr::Match(m) => self.match_expr(m, d, out),
            Expr::ForLoop(f) => self.for_loop(f, d, out),
            Expr::While(w) => {
                let mut body = Vec::new();
                self.expr(&w.cond, d, false, &mut body);
                body.extend(self.block(&w.body, d));
                out.push(Node::Loop {
                    body,
                    span: self.span(w),
                    assigned: Vec::new(),
                    counters: Vec::new(),
                });
            }
            Expr::Loop(l) => out.push(Node::Loop {
                body: self.block(&l.body, d),
                span: self.span(l),
                assigned: Vec::new(),
                counters: Vec::new(),
            }),
            Expr::Block(b) => out.extend(self.block(&b.block, d)),
            Expr::Unsafe(b) => out.extend(self.block(&b.block, d)),
            Expr::Break(_) => out.push(Node::Break),
            Expr::Continue(_) => out.push(Node::Continue),
            Expr::Return(r) => {
                if let Some(v) = &r.expr {
                    self.expr(v, d, false, out);
                }
                out.push(Node::Return);
            }
            Expr::Assign(a) => {
                self.expr(&a.right, d, false, out);
                if let Some(name) = dotted(&a.left) {
                    out.push(self.binding(name, &a.right, a));
                }
            }
            Expr::Try(t) => self.expr(&t.expr, d, statement, out),
            Expr::Paren(p) => self.expr(&p.expr, d, statement, out),
            Expr::Reference(r) => self.expr(&r.expr, d, false, out),
            Expr::Let(l) => self.expr(&l.expr, d, false, out),
            // `batches.iter().try_for_each(|b| { ... })`: the closure is a
            // loop body.
            Expr::MethodCall(m)
                if matches!(
                    m.method.to_string().as_str(),
                    "for_each" | "try_for_each" | "for_each_init" | "try_for_each_init"
                ) && matches!(m.args.last(), Some(Expr::Closure(_))) =>
            {
                self.expr(&m.receiver, d, false, out);
                let Some(Expr::Closure(c)) = m.args.last() else {
                    return;
                };
                let mut body = Vec::new();
                self.expr(&c.body, d, true, &mut body);
                // `return` in the closure ends one iteration.
                for node in body.iter_mut() {
                    if *node == Node::Return {
                        *node = Node::Continue;
                    }
                }
                out.push(Node::Loop {
                    body,
                    span: self.span(m),
                    assigned: Vec::new(),
                    counters: Vec::new(),
                });
            }
            Expr::MethodCall(m) => {
                let passthrough = matches!(m.method.to_string().as_str(), "unwrap" | "expect");
                self.expr(&m.receiver, d, statement && passthrough, out);
                for a in &m.args {
                    self.expr(a, d, false, out);
                }
                if let Some(event) = self.method_call(m, statement) {
                    out.push(Node::Event(event, self.span(m)));
                } else if let Some(opt) = self.backward_step(m) {
                    // Reset, backward pass and step, in one call.
                    let span = self.span(m);
                    out.push(Node::Event(
                        Event::Reset(Reset::Optimizer(opt.clone())),
                        span,
                    ));
                    out.push(Node::Event(Event::Backward, span));
                    out.push(Node::Event(Event::Step(Updater::Optimizer(opt)), span));
                }
            }
            Expr::Call(c) => self.call(c, d, out),
            Expr::Closure(_) | Expr::Macro(_) => {}
            other => {
                // Calls inside any other expression (binary operators, struct
                // literals, ...): lower the direct sub-expressions.
                struct Sub<'l, 'o> {
                    lowerer: &'l Lowerer,
                    depth: usize,
                    out: &'o mut Vec<Node>,
                }
                impl<'a> Visit<'a> for Sub<'_, '_> {
                    fn visit_expr(&mut self, e: &'a Expr) {
                        self.lowerer.expr(e, self.depth, false, self.out);
                    }
                }
                let mut sub = Sub {
                    lowerer: self,
                    depth: d,
                    out,
                };
                syn::visit::visit_expr(&mut sub, other);
            }
        }
    }

    /// `if` / `else`: a branch each; the test of the first classified when
    /// it is a skip on a non-finite value (`if !loss_val.is_finite()`).
    fn if_expr(&self, i: &syn::ExprIf, d: usize, out: &mut Vec<Node>) {
        self.expr(&i.cond, d, false, out);
        let mut branches = vec![self.block(&i.then_branch, d)];
        if let Some((_, e)) = &i.else_branch {
            let mut other = Vec::new();
            self.expr(e, d, true, &mut other);
            branches.push(other);
        }
        let mut tests = vec![Tested::default(); branches.len()];
        if let Some(abnormal_when_true) = skip(&i.cond) {
            let span = self.span(&i.cond);
            let text = self.source.get(span.start..span.end).unwrap_or("");
            tests[0] = Tested::single(Test {
                cond: Cond {
                    key: text.split_whitespace().collect(),
                    class: CondClass::Skip,
                },
                negated: !abnormal_when_true,
            });
        }
        out.push(Node::If {
            exhaustive: i.else_branch.is_some(),
            tests,
            at: self.span(&i.cond),
            branches,
        });
    }

    /// `match`: a branch per arm, one of which always runs.
    fn match_expr(&self, m: &syn::ExprMatch, d: usize, out: &mut Vec<Node>) {
        self.expr(&m.expr, d, false, out);
        let branches: Vec<Vec<Node>> = m
            .arms
            .iter()
            .map(|arm| {
                let mut b = Vec::new();
                self.expr(&arm.body, d, true, &mut b);
                b
            })
            .collect();
        out.push(Node::If {
            tests: vec![Tested::default(); branches.len()],
            at: self.span(&m.expr),
            branches,
            exhaustive: true,
        });
    }

    /// `for pat in expr { ... }`, with the names it binds known in the body.
    fn for_loop(&self, f: &syn::ExprForLoop, d: usize, out: &mut Vec<Node>) {
        self.expr(&f.expr, d, false, out);
        let mut bound = Vec::new();
        pat_names(&f.pat, &mut bound);
        let depth = self.loop_vars.borrow().len();
        self.loop_vars.borrow_mut().extend(bound);
        let body = self.block(&f.body, d);
        self.loop_vars.borrow_mut().truncate(depth);
        out.push(Node::Loop {
            body,
            span: self.span(f),
            assigned: Vec::new(),
            counters: Vec::new(),
        });
    }

    /// A function call: `take`/`replace`/`drop` of a store resets it; a
    /// function of the file is followed.
    fn call(&self, c: &syn::ExprCall, d: usize, out: &mut Vec<Node>) {
        for a in &c.args {
            self.expr(a, d, false, out);
        }
        let callee = dotted(&c.func).unwrap_or_default();
        let last = callee.rsplit("::").next().unwrap_or("").to_string();
        if matches!(last.as_str(), "take" | "replace" | "drop") {
            if let Some(var) = c.args.first().and_then(|a| dotted(unwrapped(a))) {
                out.push(Node::Event(Event::Reset(Reset::Store(var)), self.span(c)));
            }
        } else if self.functions.contains(&last) {
            out.push(Node::Event(Event::Call(last), self.span(c)));
        }
    }

    /// The optimizer of `opt.backward_step(&loss)` (tch, candle,
    /// gradguard; `backward_step_clip`, `backward_step_clip_norm` in tch).
    fn backward_step(&self, m: &syn::ExprMethodCall) -> Option<String> {
        let method = m.method.to_string();
        if !method.starts_with("backward_step") || m.args.is_empty() {
            return None;
        }
        dotted(unwrapped(&m.receiver)).filter(|r| self.is_optimizer(r))
    }

    fn method_call(&self, m: &syn::ExprMethodCall, statement: bool) -> Option<Event> {
        let method = m.method.to_string();
        let receiver = dotted(unwrapped(&m.receiver));
        let store_arg = || m.args.first().and_then(|a| dotted(unwrapped(a)));
        match method.as_str() {
            // gradguard: opt.backward(&loss) adds into the guard's buffers;
            // tch: loss.backward(); adds into .grad. candle's loss.backward()?
            // returns a fresh GradStore (used as a value): no accumulation.
            "backward" if !m.args.is_empty() || statement => Some(Event::Backward),
            "zero_grad" => {
                let r = receiver?;
                Some(Event::Reset(if self.is_optimizer(&r) {
                    Reset::Optimizer(r)
                } else {
                    Reset::Model(r)
                }))
            }
            // `for opt in opts { opt.step(&grads)? }`: one store applied to
            // several optimizers (over disjoint parameters), one each.
            "step" | "step_with"
                if !m.args.is_empty()
                    && receiver.as_ref().is_some_and(|r| {
                        let root = r.split('.').next().unwrap_or(r);
                        self.loop_vars.borrow().iter().any(|v| v == root)
                    }) =>
            {
                None
            }
            // `opt.step(&grads)`: an optimizer, or a store by name (not
            // `self.gru.step(&xs, &state)`, an RNN's step).
            "step" | "step_with" if !m.args.is_empty() => store_arg()
                .filter(|s| {
                    self.stores.contains(s)
                        || receiver.as_ref().is_some_and(|r| self.is_optimizer(r))
                })
                .map(|s| Event::Step(Updater::Store(s))),
            "step" => receiver
                .filter(|r| self.is_optimizer(r))
                .map(|r| Event::Step(Updater::Optimizer(r))),
            "extend" if m.args.iter().any(calls_backward) => receiver.map(Event::Extend),
            // `opt.backward_step(&loss)`: tch resets, runs the backward pass
            // and steps; candle (and gradguard) step with a fresh store.
            // Either way, no gradient is left over: lowered by the caller.
            "backward_step" | "backward_step_clip" | "backward_step_clip_norm" => None,
            name if self.functions.contains(name) => Some(Event::Call(name.to_string())),
            _ => None,
        }
    }
}

/// Whether `cond` tests a value for being non-finite: `Some(true)` when
/// it holds on the abnormal side (`loss_val.is_nan()`, `!x.is_finite()`),
/// `Some(false)` on the normal side (`x.is_finite()`); helpers named so
/// (`has_nan(&grads)`, `grads_are_finite()`) count too.
fn skip(cond: &Expr) -> Option<bool> {
    let by_name = |name: &str| {
        let lower = name.to_ascii_lowercase();
        if matches!(lower.as_str(), "is_nan" | "is_infinite")
            || ["overflow", "nonfinite", "non_finite", "has_nan", "has_inf"]
                .iter()
                .any(|k| lower.contains(k))
        {
            Some(true)
        } else if lower.contains("finite") {
            Some(false)
        } else {
            None
        }
    };
    match cond {
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Not(_)) => skip(&u.expr).map(|b| !b),
        Expr::Paren(p) => skip(&p.expr),
        Expr::Try(t) => skip(&t.expr),
        Expr::MethodCall(m) => by_name(&m.method.to_string()),
        Expr::Call(c) => by_name(dotted(&c.func)?.rsplit("::").next()?),
        Expr::Binary(b) => match b.op {
            // `x != x`: NaN.
            syn::BinOp::Ne(_)
                if dotted(&b.left).is_some() && dotted(&b.left) == dotted(&b.right) =>
            {
                Some(true)
            }
            // `a.is_nan() || a.is_infinite()` holds on the abnormal side;
            // `a.is_finite() && b.is_finite()` on the normal one.
            syn::BinOp::Or(_) | syn::BinOp::And(_) => {
                let (l, r) = (skip(&b.left)?, skip(&b.right)?);
                let or = matches!(b.op, syn::BinOp::Or(_));
                (l == r && l == or).then_some(l)
            }
            _ => None,
        },
        _ => None,
    }
}

/// The names of `GradStore`s in a file: bound (`let`, `=`) to a value that
/// runs a backward pass or names `GradStore`, and parameters whose type
/// names it.
fn stores(file: &syn::File) -> HashSet<String> {
    struct Finder(HashSet<String>);
    impl<'a> Visit<'a> for Finder {
        fn visit_local(&mut self, l: &'a syn::Local) {
            if let (Some(name), Some(init)) = (pat_name(&l.pat), &l.init) {
                let mut n = NamesGradStore(false);
                n.visit_expr(&init.expr);
                if n.0 || calls_backward(&init.expr) {
                    self.0.insert(name);
                }
            }
            syn::visit::visit_local(self, l);
        }
        fn visit_expr_assign(&mut self, a: &'a syn::ExprAssign) {
            let mut n = NamesGradStore(false);
            n.visit_expr(&a.right);
            if n.0 || calls_backward(&a.right) {
                self.0.extend(dotted(&a.left));
            }
            syn::visit::visit_expr_assign(self, a);
        }
        fn visit_pat_type(&mut self, p: &'a syn::PatType) {
            let mut n = NamesGradStore(false);
            n.visit_type(&p.ty);
            if n.0 {
                self.0.extend(pat_name(&p.pat));
            }
            syn::visit::visit_pat_type(self, p);
        }
    }
    let mut f = Finder(HashSet::new());
    f.visit_file(file);
    f.0
}

/// Whether what it visits names `GradStore`.
struct NamesGradStore(bool);

impl<'a> Visit<'a> for NamesGradStore {
    fn visit_ident(&mut self, i: &'a proc_macro2::Ident) {
        self.0 |= i == "GradStore";
    }
}

/// Every name a pattern binds.
fn pat_names(pat: &Pat, out: &mut Vec<String>) {
    match pat {
        Pat::Ident(i) => out.push(i.ident.to_string()),
        Pat::Type(t) => pat_names(&t.pat, out),
        Pat::Reference(r) => pat_names(&r.pat, out),
        Pat::Tuple(t) => t.elems.iter().for_each(|p| pat_names(p, out)),
        Pat::Paren(p) => pat_names(&p.pat, out),
        _ => {}
    }
}

fn pat_name(pat: &Pat) -> Option<String> {
    match pat {
        Pat::Ident(i) => Some(i.ident.to_string()),
        Pat::Type(t) => pat_name(&t.pat),
        _ => None,
    }
}
