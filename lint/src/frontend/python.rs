//! Python (PyTorch) to the model, with ruff's parser.

use std::collections::HashSet;

use ruff_python_ast::visitor::{walk_expr, Visitor};
use ruff_python_ast::{self as ast, Expr, Operator, Stmt};
use ruff_text_size::Ranged;

use super::{looks_like_optimizer, SyntaxError, OPTIMIZER_TYPES};
use crate::ir::{Event, Function, Node, Program, Reset, Span, Updater};

/// Deeper statement nesting than this is not analysed (no stack overflow on
/// generated code).
const MAX_DEPTH: usize = 100;

/// Parses and lowers a Python file.
pub fn lower(source: &str) -> Result<Program, SyntaxError> {
    let parsed = ruff_python_parser::parse_module(source).map_err(|e| SyntaxError {
        message: e.error.to_string(),
        offset: e.location.start().to_usize(),
    })?;
    let module = parsed.syntax();
    let mut lowerer = Lowerer {
        source,
        program: Program::default(),
        optimizers: HashSet::new(),
        functions: HashSet::new(),
    };
    lowerer.declarations(&module.body, 0);
    lowerer.definitions(&module.body, 0);
    let body = lowerer.stmts(&module.body, 0);
    lowerer.program.functions.push(Function {
        name: "<module>".into(),
        body,
    });
    Ok(lowerer.program)
}

struct Lowerer<'s> {
    source: &'s str,
    program: Program,
    /// Variables bound to an optimizer constructor.
    optimizers: HashSet<String>,
    /// Functions and methods defined in the file.
    functions: HashSet<String>,
}

fn span(node: &impl Ranged) -> Span {
    let r = node.range();
    Span::new(r.start().to_usize(), r.end().to_usize())
}

/// `a.b.c` for names and attribute chains.
fn dotted(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Name(n) => Some(n.id.to_string()),
        Expr::Attribute(a) => Some(format!("{}.{}", dotted(&a.value)?, a.attr.id)),
        _ => None,
    }
}

fn mentions_grad(expr: &Expr) -> bool {
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
fn is_grad_attribute(expr: &Expr) -> bool {
    match expr {
        Expr::Attribute(a) if a.attr.id.as_str() == "grad" => true,
        Expr::Attribute(a) if a.attr.id.as_str() == "data" => is_grad_attribute(&a.value),
        _ => false,
    }
}

/// The first `X` of an `X.parameters()` / `X.named_parameters()` inside `expr`.
fn parameters_owner(expr: &Expr) -> Option<String> {
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

impl Lowerer<'_> {
    /// Records functions, methods and optimizer variables, anywhere.
    fn declarations(&mut self, body: &[Stmt], depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for stmt in body {
            match stmt {
                Stmt::FunctionDef(f) => {
                    self.functions.insert(f.name.id.to_string());
                    self.declarations(&f.body, depth + 1);
                }
                Stmt::ClassDef(c) => self.declarations(&c.body, depth + 1),
                Stmt::Assign(a) => {
                    if is_optimizer_constructor(&a.value) {
                        {
                            for target in &a.targets {
                                if let Some(t) = dotted(target) {
                                    if let Some(model) = parameters_owner(&a.value) {
                                        self.program.optimizer_models.push((t.clone(), model));
                                    }
                                    self.optimizers.insert(t);
                                }
                            }
                        }
                    }
                }
                _ => self.nested_declarations(stmt, depth),
            }
        }
    }

    fn nested_declarations(&mut self, stmt: &Stmt, depth: usize) {
        for body in nested_bodies(stmt) {
            self.declarations(body, depth + 1);
        }
    }

    /// Lowers every function and method, once all names are known.
    fn definitions(&mut self, body: &[Stmt], depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for stmt in body {
            match stmt {
                Stmt::FunctionDef(f) => {
                    let lowered = self.stmts(&f.body, depth + 1);
                    self.program.functions.push(Function {
                        name: f.name.id.to_string(),
                        body: lowered,
                    });
                    self.definitions(&f.body, depth + 1);
                }
                Stmt::ClassDef(c) => self.definitions(&c.body, depth + 1),
                _ => {
                    for b in nested_bodies(stmt) {
                        self.definitions(b, depth + 1);
                    }
                }
            }
        }
    }

    fn is_optimizer(&self, text: &str) -> bool {
        let scheduler = text.to_ascii_lowercase().contains("sched");
        !scheduler && (self.optimizers.contains(text) || looks_like_optimizer(text))
    }

    fn stmts(&self, body: &[Stmt], depth: usize) -> Vec<Node> {
        let mut out = Vec::new();
        if depth > MAX_DEPTH {
            return out;
        }
        for stmt in body {
            self.stmt(stmt, depth, &mut out);
        }
        out
    }

    fn stmt(&self, stmt: &Stmt, depth: usize, out: &mut Vec<Node>) {
        match stmt {
            Stmt::FunctionDef(_) | Stmt::ClassDef(_) => {}
            Stmt::Expr(e) => self.expr(&e.value, out),
            Stmt::Assign(a) => {
                self.expr(&a.value, out);
                for target in &a.targets {
                    self.assignment(target, &a.value, stmt, out);
                    // A new optimizer (usually over new tensors) starts with
                    // no gradient history.
                    if let (Some(t), true) = (dotted(target), is_optimizer_constructor(&a.value)) {
                        out.push(Node::Event(
                            Event::Reset(Reset::NewOptimizer(t)),
                            span(stmt),
                        ));
                    }
                }
            }
            Stmt::AnnAssign(a) => {
                if let Some(v) = &a.value {
                    self.expr(v, out);
                    self.assignment(&a.target, v, stmt, out);
                }
            }
            Stmt::AugAssign(a) => {
                self.expr(&a.value, out);
                if a.op == Operator::Sub && mentions_grad(&a.value) && !is_grad_attribute(&a.target)
                {
                    out.push(Node::Event(Event::Step(Updater::Manual), span(stmt)));
                }
            }
            Stmt::For(f) => self.looped(&f.iter, &f.body, &f.orelse, stmt, depth, out),
            Stmt::While(w) => self.looped(&w.test, &w.body, &w.orelse, stmt, depth, out),
            Stmt::If(i) => {
                self.expr(&i.test, out);
                let mut branches = vec![self.stmts(&i.body, depth + 1)];
                let mut exhaustive = false;
                for clause in &i.elif_else_clauses {
                    if let Some(test) = &clause.test {
                        // An elif's test runs only when the branches above did not.
                        let mut branch = Vec::new();
                        self.expr(test, &mut branch);
                        branch.extend(self.stmts(&clause.body, depth + 1));
                        branches.push(branch);
                    } else {
                        exhaustive = true;
                        branches.push(self.stmts(&clause.body, depth + 1));
                    }
                }
                out.push(Node::If {
                    branches,
                    exhaustive,
                });
            }
            Stmt::With(w) => {
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
            Stmt::Try(t) => {
                out.extend(self.stmts(&t.body, depth + 1));
                out.extend(self.stmts(&t.orelse, depth + 1));
                out.extend(self.stmts(&t.finalbody, depth + 1));
            }
            Stmt::Match(m) => {
                self.expr(&m.subject, out);
                let branches = m
                    .cases
                    .iter()
                    .map(|c| self.stmts(&c.body, depth + 1))
                    .collect();
                out.push(Node::If {
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
            Stmt::Raise(_) => out.push(Node::Return),
            Stmt::Break(_) => out.push(Node::Break),
            Stmt::Continue(_) => out.push(Node::Continue),
            _ => {}
        }
    }

    /// A `for` or `while`: its header, the loop, then its `else`.
    fn looped(
        &self,
        header: &Expr,
        body: &[Stmt],
        orelse: &[Stmt],
        stmt: &Stmt,
        depth: usize,
        out: &mut Vec<Node>,
    ) {
        self.expr(header, out);
        out.push(Node::Loop {
            body: self.stmts(body, depth + 1),
            span: span(stmt),
        });
        out.extend(self.stmts(orelse, depth + 1));
    }

    /// `p.grad = None` resets; `p.data = p.data - lr * p.grad` updates.
    fn assignment(&self, target: &Expr, value: &Expr, stmt: &Stmt, out: &mut Vec<Node>) {
        if let Expr::Attribute(a) = target {
            let attr = a.attr.id.as_str();
            if attr == "grad" && matches!(value, Expr::NoneLiteral(_)) {
                out.push(Node::Event(Event::Reset(Reset::Parameters), span(stmt)));
            } else if attr == "data" && !is_grad_attribute(target) && mentions_grad(value) {
                out.push(Node::Event(Event::Step(Updater::Manual), span(stmt)));
            }
        }
    }

    /// The calls of an expression, innermost first (evaluation order).
    fn expr(&self, expr: &Expr, out: &mut Vec<Node>) {
        struct Calls<'l, 'o> {
            lowerer: &'l Lowerer<'l>,
            out: &'o mut Vec<Node>,
        }
        impl<'a> Visitor<'a> for Calls<'_, '_> {
            fn visit_expr(&mut self, expr: &'a Expr) {
                if matches!(expr, Expr::Lambda(_)) {
                    return;
                }
                walk_expr(self, expr);
                if let Expr::Call(call) = expr {
                    if let Some(event) = self.lowerer.call(call) {
                        self.out.push(Node::Event(event, span(call)));
                    }
                }
            }
        }
        // Safety net against deeply nested expressions.
        if expression_depth(expr) > MAX_DEPTH {
            return;
        }
        Calls { lowerer: self, out }.visit_expr(expr);
    }

    fn call(&self, call: &ast::ExprCall) -> Option<Event> {
        let args = &call.arguments;
        match call.func.as_ref() {
            Expr::Attribute(a) => {
                let method = a.attr.id.as_str();
                let receiver = dotted(&a.value);
                let receiver_text = || receiver.clone().unwrap_or_else(|| self.text(&a.value));
                match method {
                    "backward" | "manual_backward" => Some(Event::Backward),
                    "zero_grad" => {
                        let r = receiver_text();
                        Some(Event::Reset(if self.is_optimizer(&r) {
                            Reset::Optimizer(r)
                        } else {
                            Reset::Model(r)
                        }))
                    }
                    "zero_" if is_grad_attribute(&a.value) => Some(Event::Reset(Reset::Parameters)),
                    "step" => {
                        let r = receiver_text();
                        if self.is_optimizer(&r) {
                            // `opt.step(closure)` (LBFGS) runs its own backward and reset.
                            (args.args.is_empty() && args.keywords.is_empty())
                                .then_some(Event::Step(Updater::Optimizer(r)))
                        } else if r.to_ascii_lowercase().contains("scaler") {
                            let opt = args
                                .args
                                .first()
                                .map(|e| dotted(e).unwrap_or_else(|| self.text(e)))?;
                            Some(Event::Step(Updater::Optimizer(opt)))
                        } else {
                            None
                        }
                    }
                    "optimizer_step" => {
                        let opt = args
                            .args
                            .first()
                            .map(|e| dotted(e).unwrap_or_else(|| self.text(e)))?;
                        Some(Event::Step(Updater::Optimizer(opt)))
                    }
                    "add_" | "sub_" | "copy_" => {
                        let updates = !mentions_grad(&a.value)
                            && (args.args.iter().any(mentions_grad)
                                || args.keywords.iter().any(|k| mentions_grad(&k.value)));
                        updates.then_some(Event::Step(Updater::Manual))
                    }
                    name if self.functions.contains(name) => Some(Event::Call(name.to_string())),
                    _ => None,
                }
            }
            Expr::Name(n) if self.functions.contains(n.id.as_str()) => {
                Some(Event::Call(n.id.to_string()))
            }
            _ => None,
        }
    }

    fn text(&self, expr: &Expr) -> String {
        let s = span(expr);
        self.source.get(s.start..s.end).unwrap_or("").to_string()
    }
}

/// `torch.optim.AdamW(...)`, `optim.SGD(...)`, `Lion(...)`.
fn is_optimizer_constructor(value: &Expr) -> bool {
    let Expr::Call(call) = value else {
        return false;
    };
    let callee = dotted(&call.func).unwrap_or_default();
    let last = callee.rsplit('.').next().unwrap_or("");
    let scheduler = callee.to_ascii_lowercase().contains("sched") || last.ends_with("LR");
    !scheduler && (OPTIMIZER_TYPES.contains(&last) || callee.contains("optim."))
}

/// The statement lists nested in a compound statement.
fn nested_bodies(stmt: &Stmt) -> Vec<&[Stmt]> {
    match stmt {
        Stmt::For(s) => vec![&s.body[..], &s.orelse[..]],
        Stmt::While(s) => vec![&s.body[..], &s.orelse[..]],
        Stmt::If(s) => std::iter::once(&s.body[..])
            .chain(s.elif_else_clauses.iter().map(|c| &c.body[..]))
            .collect(),
        Stmt::With(s) => vec![&s.body[..]],
        Stmt::Try(s) => std::iter::once(&s.body[..])
            .chain(s.handlers.iter().map(|h| match h {
                ast::ExceptHandler::ExceptHandler(h) => &h.body[..],
            }))
            .chain([&s.orelse[..], &s.finalbody[..]])
            .collect(),
        Stmt::Match(m) => m.cases.iter().map(|c| &c.body[..]).collect(),
        _ => Vec::new(),
    }
}

fn expression_depth(expr: &Expr) -> usize {
    struct Depth {
        now: usize,
        max: usize,
    }
    impl<'a> Visitor<'a> for Depth {
        fn visit_expr(&mut self, expr: &'a Expr) {
            self.now += 1;
            self.max = self.max.max(self.now);
            if self.now <= MAX_DEPTH {
                walk_expr(self, expr);
            }
            self.now -= 1;
        }
    }
    let mut d = Depth { now: 0, max: 0 };
    d.visit_expr(expr);
    d.max
}
