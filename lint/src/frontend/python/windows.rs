//! Equality counters: accumulation windows kept by a counter that a loop
//! body advances and sets back to 0 when it reaches the window length,
//!
//! ```python
//! grad_accum = 0
//! for batch in loader:
//!     if grad_accum == 0:
//!         optimizer.zero_grad()
//!     loss.backward()
//!     grad_accum += 1
//!     if grad_accum == k:
//!         optimizer.step()
//!         grad_accum = 0
//! ```
//!
//! Such a counter is the iteration's place in a window of `k` iterations,
//! like `i % k` of a loop index, provided nothing else moves it. Where every
//! guard below holds, its tests are classified as counter tests
//! ([`crate::frontend::conditions::Zone`] says how a test reads it);
//! anywhere else they stay unclassified.

use ruff_python_ast::{self as ast, Expr, Operator, Stmt};
use ruff_text_size::Ranged;

use super::lowerer::Lowerer;
use super::syntax::{assigned_names, dotted, nested_bodies, span, target_names, MAX_DEPTH};
use crate::frontend::conditions::{key, Equality, Zone};
use crate::ir::Span;

/// An equality counter of one loop body (or of a method run once per
/// iteration of its caller's loop).
#[derive(Debug, Clone)]
pub(super) struct EqualityWindow {
    /// The counter (`grad_accum`, `self.accum_count`).
    pub(super) name: String,
    /// The window length's key (the text of `k`).
    modulus: String,
    /// The body.
    body: Span,
    /// The one `x += 1`.
    increment: Span,
    /// The one reset (`x = 0`, `x -= k`).
    reset: Span,
    /// The end of the `if` whose branch resets.
    branch_end: usize,
    /// Whether the counter carries from one run of the loop to the next:
    /// no `x = 0` outside the loop runs again before the next run (none is
    /// inside a loop around it).
    pub(super) persists: bool,
}

impl EqualityWindow {
    /// The counter as a test that starts at byte `offset` sees it.
    pub(super) fn at(&self, offset: usize) -> Equality {
        let zone = if offset < self.body.start || offset >= self.body.end {
            None
        } else if offset < self.increment.start {
            Some(Zone::BeforeIncrement)
        } else if offset >= self.increment.end && offset < self.reset.start {
            Some(Zone::BeforeReset)
        } else if offset >= self.branch_end {
            Some(Zone::AfterReset)
        } else {
            None
        };
        Equality {
            modulus: self.modulus.clone(),
            zone,
        }
    }
}

/// What runs the body whose equality counters are sought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runs {
    /// A loop's body (the loop statement's span).
    Loop(Span),
    /// A function's body: each call one iteration of the loop calling it.
    Function,
}

impl Lowerer<'_> {
    /// The equality counters of `body`: a name `x` with
    /// - one `x += 1` among the body's own statements (not in a branch,
    ///   which could skip it);
    /// - after it, a statement `if x == k:` (or `x >= k`, `x % k == 0`),
    ///   `k` a literal of at least 1 or a name the body does not assign,
    ///   whose branch sets `x = 0` (or `x -= k`) among its own statements;
    /// - no other assignment of `x` in the body;
    /// - nothing that ends the iteration between the increment and the
    ///   reset (`x` would then pass `k`), nor before the increment (the
    ///   iteration would not advance it);
    /// - `x` 0 when the loop first runs: every other assignment of `x` is
    ///   `x = 0`, in the loop's function outside the loop (a local: not a
    ///   parameter, never `global`/`nonlocal`), or, for an attribute, also
    ///   in `__init__`. A function body (run once per iteration of a caller)
    ///   only counts an attribute set to 0 in `__init__`.
    pub(super) fn equality_windows(&self, body: &[Stmt], runs: Runs) -> Vec<EqualityWindow> {
        let (Some(first), Some(last)) = (body.first(), body.last()) else {
            return Vec::new();
        };
        let body_span = Span::new(span(first).start, span(last).end);
        let mut assigned = Vec::new();
        assigned_names(body, &mut assigned, 0);
        let varies = |name: &str| {
            assigned.iter().any(|a| {
                a == name || crate::ir::attribute_of(name, a) || crate::ir::attribute_of(a, name)
            })
        };
        let mut out = Vec::new();
        for (j, stmt) in body.iter().enumerate() {
            let Some(name) = increment_of(stmt) else {
                continue;
            };
            if out.iter().any(|w: &EqualityWindow| w.name == name)
                || (runs == Runs::Function && !name.contains('.'))
            {
                continue;
            }
            // The first branch after the increment that tests `x` against
            // a window length and resets it.
            let found = body.iter().enumerate().skip(j + 1).find_map(|(i, s)| {
                let Stmt::If(branch) = s else { return None };
                let k = window_test(&branch.test, &name)?;
                let valid_k = match k {
                    Expr::NumberLiteral(_) => {
                        matches!(literal_int(k), Some(v) if v >= 1)
                    }
                    _ => dotted(k).is_some_and(|d| !varies(&d)),
                };
                if !valid_k {
                    return None;
                }
                let modulus = key(self.source, k);
                let r = branch
                    .body
                    .iter()
                    .position(|s| is_reset(self.source, s, &name, &modulus))?;
                Some((i, branch, modulus, r))
            });
            let Some((i, branch, modulus, r)) = found else {
                continue;
            };
            let reset = &branch.body[r];
            // `x` moves only at the increment and the reset.
            let mut bindings = Vec::new();
            bindings_of(body, &name, &mut bindings, 0);
            if bindings.len() != 2 {
                continue;
            }
            // Before the increment: a `continue` would end an iteration
            // without it; a `return` ends a call (an iteration of the
            // caller) without it.
            let before_ok = match runs {
                Runs::Loop(_) => !body[..j].iter().any(|s| ends_iteration(s, false, 0)),
                Runs::Function => !body[..j].iter().any(|s| ends_iteration(s, true, 0)),
            };
            // Between the increment and the reset, anything that leaves
            // could leave `x` at `k`, past which `x == k` never holds.
            let between_ok = !body[j + 1..i]
                .iter()
                .chain(&branch.body[..r])
                .any(|s| ends_iteration(s, true, 0));
            // Every assignment of `x` in the file, read once for both checks.
            let all = self.bindings_in_file(&name);
            if !before_ok || !between_ok || !self.starts_at_zero(&name, runs, &bindings, &all) {
                continue;
            }
            let persists = self.persists(&name, runs, &bindings, &all);
            out.push(EqualityWindow {
                name,
                modulus,
                body: body_span,
                increment: span(stmt),
                reset: span(reset),
                branch_end: span(&body[i]).end,
                persists,
            });
        }
        out
    }

    /// Whether `name` is 0 whenever the loop (or the function) starts to
    /// run, and nothing but `bindings` (the increment and the reset) moves
    /// it while it runs.
    fn starts_at_zero(
        &self,
        name: &str,
        runs: Runs,
        bindings: &[Span],
        all: &[Binding<'_>],
    ) -> bool {
        let attribute = name.rsplit_once('.').map(|(_, a)| a);
        let home = match runs {
            Runs::Loop(at) => enclosing_function(self.module_body, at.start, 0),
            Runs::Function => None,
        };
        let mut zeroed = false;
        for b in all {
            if bindings.contains(&b.at) {
                continue;
            }
            // In the loop's function, outside the loop: it runs before or
            // after the loop, never while it runs.
            let same_function = match (runs, b.function, home) {
                (Runs::Function, _, _) => false,
                (Runs::Loop(at), f, h) => {
                    f.map(span) == h.map(span) && !(at.start <= b.at.start && b.at.end <= at.end)
                }
            };
            let ok = match attribute {
                // A local: another function's `x` is another variable.
                None if !b.declared && !same_function => continue,
                None => b.zero && !b.declared,
                Some(_) => {
                    b.zero
                        && (b.function.is_some_and(|f| f.name.id.as_str() == "__init__")
                            || same_function)
                }
            };
            if !ok {
                return false;
            }
            zeroed = true;
        }
        // A parameter could bring any value.
        let parameter = attribute.is_none()
            && home.is_some_and(|f| f.parameters.iter().any(|p| p.name().as_str() == name));
        zeroed && !parameter
    }
}

impl<'s> Lowerer<'s> {
    /// Every assignment of the counter `name` in the file (of any attribute
    /// of that name, for `self.x`).
    fn bindings_in_file(&self, name: &str) -> Vec<Binding<'s>> {
        let attribute = name.rsplit_once('.').map(|(_, a)| a);
        let mut all = Vec::new();
        module_bindings(self.module_body, None, name, attribute, &mut all, 0);
        all
    }

    /// Whether the counter `name` of a loop keeps its value from one run
    /// of the loop to the next: a local whose `x = 0` outside the loop (in
    /// `all` but not `bindings`) all run before any loop around it
    /// (`grad_accum = 0` before the epoch loop, the window loop inside it:
    /// the window goes on across epochs).
    fn persists(&self, name: &str, runs: Runs, bindings: &[Span], all: &[Binding<'_>]) -> bool {
        let Runs::Loop(at) = runs else {
            return false;
        };
        !name.contains('.')
            && !all
                .iter()
                .filter(|b| !bindings.contains(&b.at))
                .any(|b| loop_around(self.module_body, b.at, at, 0))
    }
}

/// Whether a `for` or `while` of `body` holds both `a` and `b`.
fn loop_around(body: &[Stmt], a: Span, b: Span, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    body.iter().any(|stmt| {
        let s = span(stmt);
        let holds = |x: Span| s.start <= x.start && x.end <= s.end;
        if !holds(a) || !holds(b) {
            return false;
        }
        matches!(stmt, Stmt::For(_) | Stmt::While(_))
            || match stmt {
                Stmt::FunctionDef(f) => loop_around(&f.body, a, b, depth + 1),
                Stmt::ClassDef(c) => loop_around(&c.body, a, b, depth + 1),
                _ => nested_bodies(stmt)
                    .into_iter()
                    .any(|inner| loop_around(inner, a, b, depth + 1)),
            }
    })
}

/// `x += 1`: the name `x`.
fn increment_of(stmt: &Stmt) -> Option<String> {
    let Stmt::AugAssign(a) = stmt else {
        return None;
    };
    (a.op == Operator::Add && literal_int(&a.value) == Some(1))
        .then(|| dotted(&a.target))
        .flatten()
}

fn literal_int(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::NumberLiteral(n) => match &n.value {
            ast::Number::Int(i) => i.as_i64(),
            _ => None,
        },
        _ => None,
    }
}

/// `x == k`, `k == x`, `x >= k`, `k <= x`, `x % k == 0`: the window length
/// `k`. After the increment `x` is 1 to `k`, and each of these holds
/// exactly when it is `k`.
fn window_test<'e>(test: &'e Expr, name: &str) -> Option<&'e Expr> {
    let Expr::Compare(c) = test else { return None };
    if c.ops.len() != 1 || c.comparators.len() != 1 {
        return None;
    }
    let (left, right) = (c.left.as_ref(), &c.comparators[0]);
    let is_x = |e: &Expr| dotted(e).is_some_and(|d| d == name);
    match c.ops[0] {
        ast::CmpOp::Eq if is_x(left) => Some(right),
        ast::CmpOp::Eq if is_x(right) => {
            // `x % k == 0` with the modulo on the left.
            Some(left)
        }
        ast::CmpOp::GtE if is_x(left) => Some(right),
        ast::CmpOp::LtE if is_x(right) => Some(left),
        ast::CmpOp::Eq => match (left, literal_int(right)) {
            (Expr::BinOp(b), Some(0)) if b.op == Operator::Mod && is_x(&b.left) => {
                Some(b.right.as_ref())
            }
            _ => None,
        },
        _ => None,
    }
}

/// `x = 0` or `x -= k` (`k`'s key `modulus`).
fn is_reset(source: &str, stmt: &Stmt, name: &str, modulus: &str) -> bool {
    match stmt {
        Stmt::Assign(a) => {
            matches!(a.targets.as_slice(), [t] if dotted(t).is_some_and(|d| d == name))
                && literal_int(&a.value) == Some(0)
        }
        Stmt::AugAssign(a) => {
            a.op == Operator::Sub
                && dotted(&a.target).is_some_and(|d| d == name)
                && key(source, &a.value) == modulus
        }
        _ => false,
    }
}

/// The statements of `body` that assign `name` (nested blocks and loops
/// included, nested functions and classes not).
fn bindings_of(body: &[Stmt], name: &str, out: &mut Vec<Span>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for stmt in body {
        if stmt_binds(stmt, name) {
            out.push(span(stmt));
        }
        if !matches!(stmt, Stmt::FunctionDef(_) | Stmt::ClassDef(_)) {
            for b in nested_bodies(stmt) {
                bindings_of(b, name, out, depth + 1);
            }
        }
    }
}

/// The names a statement itself assigns (not its nested blocks).
fn bound_by(stmt: &Stmt) -> Vec<String> {
    let mut names = Vec::new();
    match stmt {
        Stmt::Assign(a) => a.targets.iter().for_each(|t| target_names(t, &mut names)),
        Stmt::AugAssign(a) => target_names(&a.target, &mut names),
        Stmt::AnnAssign(a) => target_names(&a.target, &mut names),
        Stmt::For(f) => target_names(&f.target, &mut names),
        Stmt::With(w) => w
            .items
            .iter()
            .filter_map(|i| i.optional_vars.as_deref())
            .for_each(|t| target_names(t, &mut names)),
        Stmt::Delete(d) => d.targets.iter().for_each(|t| target_names(t, &mut names)),
        _ => {}
    }
    names
}

fn stmt_binds(stmt: &Stmt, name: &str) -> bool {
    bound_by(stmt).iter().any(|n| n == name)
}

/// Whether `stmt` can end the iteration (or the call) early: `continue`
/// and `break` of the loop (not of loops nested in it), and, with
/// `leaving`, `return` and `raise`.
fn ends_iteration(stmt: &Stmt, leaving: bool, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    match stmt {
        Stmt::Continue(_) => true,
        Stmt::Break(_) => leaving,
        Stmt::Return(_) | Stmt::Raise(_) => leaving,
        Stmt::FunctionDef(_) | Stmt::ClassDef(_) => false,
        // A nested loop's `continue` and `break` are its own.
        Stmt::For(_) | Stmt::While(_) => nested_bodies(stmt)
            .iter()
            .any(|b| b.iter().any(|s| leaving && leaves(s, depth + 1))),
        _ => nested_bodies(stmt)
            .iter()
            .any(|b| b.iter().any(|s| ends_iteration(s, leaving, depth + 1))),
    }
}

/// Whether `stmt` holds a `return` or `raise` (nested functions aside).
fn leaves(stmt: &Stmt, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    match stmt {
        Stmt::Return(_) | Stmt::Raise(_) => true,
        Stmt::FunctionDef(_) | Stmt::ClassDef(_) => false,
        _ => nested_bodies(stmt)
            .iter()
            .any(|b| b.iter().any(|s| leaves(s, depth + 1))),
    }
}

/// An assignment of the counter somewhere in the file.
struct Binding<'a> {
    at: Span,
    /// The innermost function around it.
    function: Option<&'a ast::StmtFunctionDef>,
    /// `x = 0`.
    zero: bool,
    /// `global x` / `nonlocal x`: another scope's assignments reach it.
    declared: bool,
}

/// Every assignment in the file of `name` (or, for an attribute, of any
/// attribute named `attribute`, whatever it belongs to), and every
/// `global`/`nonlocal` declaration of a plain `name`.
fn module_bindings<'a>(
    body: &'a [Stmt],
    function: Option<&'a ast::StmtFunctionDef>,
    name: &str,
    attribute: Option<&str>,
    out: &mut Vec<Binding<'a>>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let matches = |n: &String| match attribute {
        None => n == name,
        Some(a) => n.rsplit_once('.').is_some_and(|(_, last)| last == a),
    };
    for stmt in body {
        if bound_by(stmt).iter().any(matches) {
            let zero = match stmt {
                Stmt::Assign(a) => {
                    matches!(a.targets.as_slice(), [t] if dotted(t).as_ref().is_some_and(matches))
                        && literal_int(&a.value) == Some(0)
                }
                Stmt::AnnAssign(a) => a.value.as_deref().and_then(literal_int) == Some(0),
                _ => false,
            };
            out.push(Binding {
                at: span(stmt),
                function,
                zero,
                declared: false,
            });
        }
        let declared = match stmt {
            Stmt::Global(g) => g.names.iter().any(|n| n.id.as_str() == name),
            Stmt::Nonlocal(n) => n.names.iter().any(|n| n.id.as_str() == name),
            _ => false,
        };
        if declared && attribute.is_none() {
            out.push(Binding {
                at: span(stmt),
                function,
                zero: false,
                declared: true,
            });
        }
        match stmt {
            Stmt::FunctionDef(f) => {
                module_bindings(&f.body, Some(f), name, attribute, out, depth + 1)
            }
            Stmt::ClassDef(c) => {
                module_bindings(&c.body, function, name, attribute, out, depth + 1)
            }
            _ => {
                for b in nested_bodies(stmt) {
                    module_bindings(b, function, name, attribute, out, depth + 1);
                }
            }
        }
    }
}

/// The innermost function whose body holds byte `offset`.
fn enclosing_function(body: &[Stmt], offset: usize, depth: usize) -> Option<&ast::StmtFunctionDef> {
    if depth > MAX_DEPTH {
        return None;
    }
    let stmt = body
        .iter()
        .find(|s| s.range().start().to_usize() <= offset && offset < s.range().end().to_usize())?;
    match stmt {
        Stmt::FunctionDef(f) => Some(enclosing_function(&f.body, offset, depth + 1).unwrap_or(f)),
        Stmt::ClassDef(c) => enclosing_function(&c.body, offset, depth + 1),
        _ => nested_bodies(stmt)
            .into_iter()
            .find_map(|b| enclosing_function(b, offset, depth + 1)),
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{CondClass, Node};

    /// The counter tests of every branch of the file, in order, as
    /// `counter%modulus==residue` (`!` before a test that holds off the
    /// residue).
    fn counter_tests(source: &str) -> Vec<String> {
        fn walk(nodes: &[Node], out: &mut Vec<String>) {
            for node in nodes {
                match node {
                    Node::If {
                        branches, tests, ..
                    } => {
                        for tested in tests {
                            for t in tested.holds.iter().flatten() {
                                if let CondClass::Counter { .. } = t.cond.class {
                                    let not = if t.negated { "!" } else { "" };
                                    out.push(format!("{not}{}", t.cond.key));
                                }
                            }
                        }
                        branches.iter().for_each(|b| walk(b, out));
                    }
                    Node::Loop { body, .. } | Node::Accumulate(body) => walk(body, out),
                    _ => {}
                }
            }
        }
        let program = crate::frontend::python::lower(source).unwrap();
        let mut out = Vec::new();
        for f in &program.functions {
            walk(&f.body, &mut out);
        }
        out
    }

    const JEN: &str = "\
def train(model, optimizer, loader, k, epochs):
    grad_accum = 0
    for epoch in range(epochs):
        for batch in loader:
            if grad_accum == 0:
                optimizer.zero_grad()
            model(batch).backward()
            grad_accum += 1
            if grad_accum == k:
                optimizer.step()
                grad_accum = 0
";

    #[test]
    fn tests_before_and_after_the_increment() {
        assert_eq!(
            counter_tests(JEN),
            ["grad_accum%k==Low(0)", "grad_accum%k==High(1)"]
        );
    }

    #[test]
    fn order_tests_truthiness_and_modulo() {
        let source = "\
def train(model, optimizer, loader, k):
    n = 0
    for batch in loader:
        if not n:
            optimizer.zero_grad()
        if n > 0:
            pass
        if n % k == 0:
            pass
        if n == k - 1:
            pass
        if n == 1:
            pass
        n += 1
        model(batch).backward()
        if n % k == 0:
            pass
        if n >= k:
            optimizer.step()
            n -= k
        if n == 0:
            pass
        if n == 2:
            pass
";
        assert_eq!(
            counter_tests(source),
            [
                "n%k==Low(0)",
                "!n%k==Low(0)",
                "n%k==Low(0)",
                "n%k==High(1)",
                "n%k==Low(1)|k>1",
                "n%k==High(1)",
                "n%k==High(1)",
                "n%k==High(1)",
                "n%k==Low(1)|k>1",
            ]
        );
    }

    #[test]
    fn attribute_counter_zeroed_in_init() {
        let source = "\
class Trainer:
    def __init__(self):
        self.accum_count = 0

    def fit(self, loader):
        for batch in loader:
            self.accum_count += 1
            self.model(batch).backward()
            if self.accum_count >= self.k:
                self.optimizer.step()
                self.optimizer.zero_grad()
                self.accum_count = 0
";
        assert_eq!(counter_tests(source), ["self.accum_count%self.k==High(1)"]);
    }

    /// Each guard, broken: the tests stay unclassified.
    #[test]
    fn refused() {
        let cases = [
            // Increment in a branch.
            JEN.replace(
                "            grad_accum += 1\n",
                "            if model:\n                grad_accum += 1\n",
            ),
            // Another assignment in the loop.
            JEN.replace(
                "            model(batch).backward()\n",
                "            model(batch).backward()\n            grad_accum = 3\n",
            ),
            // Reset outside the branch that tests `k`.
            JEN.replace("                grad_accum = 0\n", "            grad_accum = 0\n"),
            // Reset in a nested branch.
            JEN.replace(
                "                grad_accum = 0\n",
                "                if model:\n                    grad_accum = 0\n",
            ),
            // Not 0 before the loop.
            JEN.replace("    grad_accum = 0\n", "    grad_accum = 1\n"),
            // A parameter.
            JEN.replace("    grad_accum = 0\n", "")
                .replace("k, epochs)", "k, epochs, grad_accum)"),
            // `k` moves in the loop.
            JEN.replace(
                "            model(batch).backward()\n",
                "            model(batch).backward()\n            k = 2\n",
            ),
            // A `continue` between the increment and the reset.
            JEN.replace(
                "            grad_accum += 1\n",
                "            grad_accum += 1\n            if model:\n                continue\n",
            ),
            // A `continue` before the increment.
            JEN.replace(
                "            model(batch).backward()\n",
                "            model(batch).backward()\n            if model:\n                continue\n",
            ),
            // The window test is an `and`: the reset may not run at `k`.
            JEN.replace("grad_accum == k:", "grad_accum == k and model:"),
        ];
        for case in &cases {
            assert_eq!(counter_tests(case), Vec::<String>::new(), "{case}");
        }
    }

    #[test]
    fn attribute_set_elsewhere_is_refused() {
        let source = "\
class Trainer:
    def __init__(self):
        self.accum_count = 0

    def restart(self):
        self.accum_count = 0

    def fit(self, loader):
        for batch in loader:
            if self.accum_count == 0:
                self.optimizer.zero_grad()
            self.accum_count += 1
            self.model(batch).backward()
            self.restart()
            if self.accum_count == self.k:
                self.optimizer.step()
                self.accum_count = 0
";
        assert_eq!(counter_tests(source), Vec::<String>::new());
    }
}
