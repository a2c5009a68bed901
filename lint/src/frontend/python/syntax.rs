//! Helpers over ruff's syntax tree: spans, dotted names, nested blocks,
//! names bound and read.

use ruff_python_ast::visitor::{walk_expr, Visitor};
use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_text_size::Ranged;
use rustc_hash::FxHashMap as HashMap;

use crate::ir::Span;

/// Deeper statement nesting than this is not analysed (no stack overflow on
/// generated code).
pub(super) const MAX_DEPTH: usize = 100;

/// A node's byte range in the file.
pub(super) fn span(node: &impl Ranged) -> Span {
    let r = node.range();
    Span::new(r.start().to_usize(), r.end().to_usize())
}

/// `a.b.c` for names and attribute chains.
pub(super) fn dotted(expr: &Expr) -> Option<String> {
    // One string written left to right, its length measured first: this
    // runs for nearly every expression of a lowered file.
    fn length(expr: &Expr) -> Option<usize> {
        match expr {
            Expr::Name(n) => Some(n.id.len()),
            Expr::Attribute(a) => Some(length(&a.value)? + 1 + a.attr.id.len()),
            _ => None,
        }
    }
    fn push(expr: &Expr, out: &mut String) {
        match expr {
            Expr::Name(n) => out.push_str(n.id.as_str()),
            Expr::Attribute(a) => {
                push(&a.value, out);
                out.push('.');
                out.push_str(a.attr.id.as_str());
            }
            _ => {}
        }
    }
    let mut out = String::with_capacity(length(expr)?);
    push(expr, &mut out);
    Some(out)
}

/// The names and attribute paths listed in a list or tuple literal.
pub(super) fn listed_names(expr: &Expr) -> Vec<String> {
    match expr {
        Expr::List(l) => l.elts.iter().filter_map(dotted).collect(),
        Expr::Tuple(t) => t.elts.iter().filter_map(dotted).collect(),
        _ => Vec::new(),
    }
}

/// The plain names an expression reads.
pub(super) fn names_read(expr: &Expr, out: &mut Vec<String>) {
    struct Finder<'o>(&'o mut Vec<String>);
    impl<'a> Visitor<'a> for Finder<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Name(n) = expr {
                self.0.push(n.id.to_string());
            }
            walk_expr(self, expr);
        }
    }
    Finder(out).visit_expr(expr);
}

/// Names bound by an assignment target.
pub(super) fn target_names(target: &Expr, out: &mut Vec<String>) {
    match target {
        Expr::Tuple(t) => t.elts.iter().for_each(|e| target_names(e, out)),
        Expr::List(l) => l.elts.iter().for_each(|e| target_names(e, out)),
        Expr::Starred(s) => target_names(&s.value, out),
        e => out.extend(dotted(e)),
    }
}

/// Every name (dotted) assigned in `body`, nested blocks included, nested
/// functions and classes not.
pub(super) fn assigned_names(body: &[Stmt], out: &mut Vec<String>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for stmt in body {
        match stmt {
            Stmt::Assign(a) => a.targets.iter().for_each(|t| target_names(t, out)),
            Stmt::AugAssign(a) => target_names(&a.target, out),
            Stmt::AnnAssign(a) => target_names(&a.target, out),
            Stmt::For(f) => target_names(&f.target, out),
            Stmt::With(w) => w
                .items
                .iter()
                .filter_map(|i| i.optional_vars.as_deref())
                .for_each(|t| target_names(t, out)),
            _ => {}
        }
        if !matches!(stmt, Stmt::FunctionDef(_) | Stmt::ClassDef(_)) {
            for b in nested_bodies(stmt) {
                assigned_names(b, out, depth + 1);
            }
        }
    }
}

/// The statement lists nested in a compound statement.
pub(super) fn nested_bodies(stmt: &Stmt) -> Vec<&[Stmt]> {
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

/// The arguments of one call: whether each positional one is `None`, the
/// keywords given (and whether each is `None`), and whether `*args` or
/// `**kwargs` hide the rest.
#[derive(Debug, Clone, Default)]
pub(super) struct CallShape {
    pub(super) positional: Vec<bool>,
    pub(super) keywords: Vec<(String, bool)>,
    pub(super) unpacked: bool,
}

/// Every call `name(...)` of a plain name in `body`, by name.
pub(super) fn call_shapes(body: &[Stmt]) -> HashMap<String, Vec<CallShape>> {
    struct Finder(HashMap<String, Vec<CallShape>>);
    impl<'a> Visitor<'a> for Finder {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Call(c) = expr {
                if let Expr::Name(n) = c.func.as_ref() {
                    let none = |e: &Expr| matches!(e, Expr::NoneLiteral(_));
                    let args = &c.arguments;
                    let shape = CallShape {
                        positional: args.args.iter().map(none).collect(),
                        keywords: args
                            .keywords
                            .iter()
                            .filter_map(|k| Some((k.arg.as_ref()?.to_string(), none(&k.value))))
                            .collect(),
                        unpacked: args.args.iter().any(|a| matches!(a, Expr::Starred(_)))
                            || args.keywords.iter().any(|k| k.arg.is_none()),
                    };
                    self.0.entry(n.id.to_string()).or_default().push(shape);
                }
            }
            walk_expr(self, expr);
        }
    }
    let mut f = Finder(HashMap::default());
    for stmt in body {
        ruff_python_ast::visitor::walk_stmt(&mut f, stmt);
    }
    f.0
}

/// The names of a definition's positional parameters, in order (`self`
/// included).
pub(super) fn positional_names(params: &ast::Parameters) -> Vec<&str> {
    params
        .posonlyargs
        .iter()
        .chain(&params.args)
        .map(|a| a.parameter.name.id.as_str())
        .collect()
}

/// The plain names a function binds only to what its parameters hold
/// (`scaler = kwargs.get("scaler", None)`, `amp = cfg.amp`, `opt =
/// getattr(args, "opt", None)`; `self` and `cls` aside): each call binds
/// them again to the same thing while the caller hands the same
/// arguments, so a loop that calls the function does not change them.
pub(super) fn settled_names(f: &ast::StmtFunctionDef) -> Vec<String> {
    let params: Vec<&str> = parameter_names(&f.parameters)
        .filter(|n| !matches!(*n, "self" | "cls"))
        .collect();
    // How many times each name is bound, and how many of those are reads.
    let mut bindings: HashMap<String, (usize, usize)> = HashMap::default();
    let mut all = Vec::new();
    assigned_names(&f.body, &mut all, 0);
    for name in all {
        bindings.entry(name).or_default().0 += 1;
    }
    let mut pure = Vec::new();
    pure_bindings(&f.body, &params, &mut pure, 0);
    for name in pure {
        bindings.entry(name).or_default().1 += 1;
    }
    let mut out: Vec<String> = bindings
        .into_iter()
        .filter(|(_, (all, pure))| *pure > 0 && all == pure)
        .map(|(name, _)| name)
        .collect();
    out.sort();
    out
}

/// Every parameter name of a function: positional, keyword-only, `*args`
/// and `**kwargs`.
pub(super) fn parameter_names(p: &ast::Parameters) -> impl Iterator<Item = &str> {
    p.posonlyargs
        .iter()
        .chain(&p.args)
        .chain(&p.kwonlyargs)
        .map(|a| a.parameter.name.id.as_str())
        .chain(p.vararg.iter().map(|a| a.name.id.as_str()))
        .chain(p.kwarg.iter().map(|a| a.name.id.as_str()))
}

/// The plain names `body` binds to a read of `params` alone, once per
/// binding.
fn pure_bindings(body: &[Stmt], params: &[&str], out: &mut Vec<String>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    fn read(e: &Expr, params: &[&str]) -> bool {
        match e {
            Expr::Name(n) => params.contains(&n.id.as_str()),
            Expr::Attribute(a) => read(&a.value, params),
            Expr::Subscript(s) => read(&s.value, params) && s.slice.is_literal_expr(),
            Expr::Call(c) if c.arguments.keywords.is_empty() => {
                let args = &c.arguments.args;
                match c.func.as_ref() {
                    // `kwargs.get("k", None)`
                    Expr::Attribute(a) if a.attr.id.as_str() == "get" => {
                        read(&a.value, params)
                            && (1..=2).contains(&args.len())
                            && args.iter().all(Expr::is_literal_expr)
                    }
                    // `getattr(args, "k", None)`
                    Expr::Name(n) if n.id.as_str() == "getattr" => {
                        (2..=3).contains(&args.len())
                            && read(&args[0], params)
                            && args[1..].iter().all(Expr::is_literal_expr)
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
    for stmt in body {
        let bound = match stmt {
            Stmt::Assign(a) if a.targets.len() == 1 => Some((&a.targets[0], a.value.as_ref())),
            Stmt::AnnAssign(a) => a.value.as_deref().map(|v| (a.target.as_ref(), v)),
            _ => None,
        };
        if let Some((Expr::Name(n), value)) = bound {
            if read(value, params) {
                out.push(n.id.to_string());
            }
        }
        if !matches!(stmt, Stmt::FunctionDef(_) | Stmt::ClassDef(_)) {
            for b in nested_bodies(stmt) {
                pure_bindings(b, params, out, depth + 1);
            }
        }
    }
}

/// The names (dotted) the file binds only to `True` or `False` (`name =
/// True`, `self.is_train = False`, never bound otherwise): flags whose
/// value an iteration leaves for the next (`should_start_update = True`
/// after a step, tested before the reset).
pub(super) fn literal_flags(body: &[Stmt]) -> Vec<String> {
    use ruff_python_ast::visitor::walk_stmt;
    /// `name = True` statements, and then every other binding of those
    /// names (looked at only when its root name is one of theirs).
    struct Flags {
        literal: Vec<String>,
        roots: Vec<String>,
        otherwise: Vec<String>,
        collecting: bool,
    }
    fn root(name: &str) -> &str {
        name.split('.').next().unwrap_or(name)
    }
    impl<'a> Visitor<'a> for Flags {
        fn visit_stmt(&mut self, stmt: &'a Stmt) {
            if let Stmt::Assign(a) = stmt {
                if let ([target], Expr::BooleanLiteral(_)) =
                    (a.targets.as_slice(), a.value.as_ref())
                {
                    if self.collecting {
                        if let Some(name) = dotted(target) {
                            self.literal.push(name);
                        }
                    }
                    return;
                }
            }
            walk_stmt(self, stmt);
        }
        fn visit_expr(&mut self, expr: &'a Expr) {
            if self.collecting {
                return walk_expr(self, expr);
            }
            let stored = match expr {
                Expr::Name(n) => !n.ctx.is_load(),
                Expr::Attribute(a) => !a.ctx.is_load(),
                _ => false,
            };
            // The root name first: most stores bind other names.
            let mut base = expr;
            while let Expr::Attribute(a) = base {
                base = &a.value;
            }
            let stored = stored
                && matches!(base, Expr::Name(n) if self.roots.iter().any(|r| r == n.id.as_str()));
            if stored {
                if let Some(name) = dotted(expr) {
                    if self.roots.iter().any(|r| r == root(&name)) {
                        self.otherwise.push(name);
                    }
                }
            }
            walk_expr(self, expr);
        }
    }
    let mut flags = Flags {
        literal: Vec::new(),
        roots: Vec::new(),
        otherwise: Vec::new(),
        collecting: true,
    };
    flags.visit_body(body);
    if flags.literal.is_empty() {
        return Vec::new();
    }
    flags.roots = flags.literal.iter().map(|n| root(n).to_string()).collect();
    flags.collecting = false;
    flags.visit_body(body);
    let mut out: Vec<String> = flags
        .literal
        .iter()
        .filter(|n| !flags.otherwise.contains(n))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The statements that name a reset without calling it (`optimizer.zero_grad`
/// alone on its line, a no-op): where, and the receiver.
pub(super) fn uncalled_resets(body: &[Stmt]) -> Vec<(Span, String)> {
    use ruff_python_ast::visitor::walk_stmt;
    struct Uncalled(Vec<(Span, String)>);
    impl<'a> Visitor<'a> for Uncalled {
        fn visit_stmt(&mut self, stmt: &'a Stmt) {
            if let Stmt::Expr(e) = stmt {
                if let Expr::Attribute(a) = e.value.as_ref() {
                    if a.attr.id.as_str() == "zero_grad" {
                        if let Some(receiver) = dotted(&a.value) {
                            self.0.push((span(stmt), receiver));
                        }
                    }
                }
            }
            walk_stmt(self, stmt);
        }
    }
    let mut found = Uncalled(Vec::new());
    found.visit_body(body);
    found.0
}
