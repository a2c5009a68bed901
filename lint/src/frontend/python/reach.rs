//! What each backward pass's loss certainly reaches (for GL009,
//! `stray-backward-pass`): a must def-use within one function. The loss
//! expression is read, and each name it reads is followed to the one
//! assignment whose value it certainly holds (the last plain assignment
//! before it in the enclosing blocks, none in between, nor in a loop around
//! it later); the calls met on the way (`net_d(fake)`, `net_d.forward(x)`)
//! are the models the loss is computed through. Gradients stop at
//! `.detach()`, `.item()`, `.data`, comparisons, `torch.no_grad()` blocks,
//! and anything not understood stops the search: the answer is a subset of
//! the truth. Also here: the models each optimizer is built over, and the
//! models the file may freeze (`requires_grad_(False)`).

use ruff_python_ast::visitor::{walk_expr, walk_stmt, Visitor};
use ruff_python_ast::{self as ast, Expr, Stmt, UnaryOp};
use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;

use super::gradients::is_optimizer_constructor;
use super::imports::Imports;
use super::syntax::{
    assigned_names, dotted, nested_bodies, parameter_names, positional_names, span, target_names,
    MAX_DEPTH,
};
use crate::ir::{Built, HandedIn, HandedOut, Pass, Reach};

/// Methods whose result carries no gradient to what they are called on.
/// (`torch.argmax(x)` reads as a method of `torch`: the functions of
/// [`STOP_FUNCTIONS`] that torch has are here too, and [`MADE_LIKE`] is
/// asked as well.)
const STOP_METHODS: [&str; 33] = [
    "detach",
    "detach_",
    "item",
    "tolist",
    "numpy",
    "argmax",
    "argmin",
    "argsort",
    "sign",
    "round",
    "floor",
    "ceil",
    "long",
    "int",
    "bool",
    "byte",
    "size",
    "dim",
    "numel",
    "nonzero",
    "eq",
    "ne",
    "gt",
    "lt",
    "ge",
    "le",
    "isnan",
    "new_zeros",
    "new_ones",
    "new_empty",
    "new_full",
    "bernoulli",
    "multinomial",
];

/// Tensors made like another (`torch.randn_like(mu)` takes its shape
/// only): no gradient from it, called as a function or as torch's.
const MADE_LIKE: [&str; 7] = [
    "randn_like",
    "rand_like",
    "randint_like",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
];

/// Functions whose result carries no gradient from their arguments (and
/// [`MADE_LIKE`]).
const STOP_FUNCTIONS: [&str; 19] = [
    "bernoulli",
    "multinomial",
    "randperm",
    "float",
    "int",
    "bool",
    "len",
    "str",
    "round",
    "isinstance",
    "type",
    "argmax",
    "argmin",
    "sign",
    "isnan",
    "isinf",
    "isfinite",
    "no_grad",
    "detach",
];

/// Attributes that carry no gradient.
const STOP_ATTRIBUTES: [&str; 8] = [
    "data",
    "grad",
    "shape",
    "dtype",
    "device",
    "requires_grad",
    "is_cuda",
    "ndim",
];

/// Lookups of one loss's names (past it, the rest is not known).
const BUDGET: usize = 400;

/// What the backward passes of a module reach, what its optimizers are
/// built over, and what it may freeze.
pub(super) fn reach(
    source: &str,
    module: &[Stmt],
    handed_in: &HandedIn,
    instances: &[(String, Built)],
) -> Reach {
    let mut reach = Reach::default();
    reach.optimizers.extend(instances.iter().cloned());
    let mut finder = Finder {
        reach: &mut reach,
        source,
        loops: Vec::new(),
        params: Vec::new(),
        classes: Vec::new(),
        defined: Vec::new(),
        stored: Vec::new(),
        others: Vec::new(),
        returns: HashMap::default(),
        listed_first: HashMap::default(),
        from_calls: Vec::new(),
        lists: HashMap::default(),
        depth: 0,
    };
    for stmt in module {
        finder.visit_stmt(stmt);
    }
    finder.optimizers_returned();
    let mut others = std::mem::take(&mut finder.others);
    others.sort();
    others.dedup();
    for name in others {
        if reach.optimizers.iter().any(|(o, _)| *o == name) {
            reach.optimizers.push((name, Built::unknown()));
        }
    }
    // What other files' calls hand its functions: their parameters are
    // optimizers built over the models handed with them.
    if !handed_in.is_empty() {
        for stmt in module {
            if let Stmt::FunctionDef(f) = stmt {
                for call in handed_in.get(f.name.id.as_str()).into_iter().flatten() {
                    reach.optimizers.extend(received(f, call));
                }
            }
        }
    }
    // A stray pass needs two optimizers built over known models (one
    // whose gradients it lands in, one whose pass it is).
    let mut built: Vec<&str> = reach
        .optimizers
        .iter()
        .filter(|(_, b)| !b.models.is_empty() || b.closed)
        .map(|(o, _)| o.as_str())
        .collect();
    built.sort_unstable();
    built.dedup();
    // Or one, and a tensor updated by hand from its gradient (an attack's
    // `delta.grad`), whose passes may land in that optimizer's model.
    if built.len() < 2 && (built.is_empty() || !source.contains(".grad")) {
        return reach;
    }
    // Modules imported whole (`import rl_utils`), torch's and numpy's aside.
    let mut modules: Vec<&str> = Vec::new();
    for stmt in module {
        if let Stmt::Import(i) = stmt {
            for alias in &i.names {
                let local = alias.asname.as_ref().unwrap_or(&alias.name);
                let root = local.id.split('.').next().unwrap_or("");
                if !matches!(root, "torch" | "numpy" | "np" | "math" | "F" | "nn") {
                    modules.push(root);
                }
            }
        }
    }
    let mut scopes = vec![module];
    scopes_in(module, &mut scopes, 0);
    let detaching = detaching(module);
    let binder = Binder {
        source,
        memo: RefCell::default(),
    };
    let mut models: Vec<&str> = reach
        .optimizers
        .iter()
        .flat_map(|(_, b)| b.models.iter().chain(&b.parts))
        .map(String::as_str)
        .collect();
    models.sort_unstable();
    models.dedup();
    let mut tensors: Vec<&str> = reach
        .optimizers
        .iter()
        .flat_map(|(_, b)| &b.tensors)
        .map(String::as_str)
        .collect();
    tensors.sort_unstable();
    tensors.dedup();
    for body in scopes {
        let mut scope = Scope {
            source,
            passes: Vec::new(),
            modules: &modules,
            models: &models,
            tensors: &tensors,
            binder: &binder,
            detaching: &detaching,
        };
        scope.block(body, &mut Vec::new(), 0);
        reach.passes.extend(scope.passes);
    }
    through_call_sites(module, &mut reach.passes);
    reach
}

/// The methods of the module's classes (by name; a name two classes
/// define with different answers is left out) -> for each positional
/// parameter after `self`, whether the body reads it only under
/// `.detach()` (`reconstruction.contiguous().detach()`), and at least
/// once.
fn detaching(module: &[Stmt]) -> HashMap<String, Vec<bool>> {
    /// The name at the root of a chain of calls, attributes and subscripts.
    fn root(mut e: &Expr) -> Option<&ast::ExprName> {
        loop {
            match e {
                Expr::Name(n) => return Some(n),
                Expr::Attribute(a) => e = &a.value,
                Expr::Call(c) => e = &c.func,
                Expr::Subscript(s) => e = &s.value,
                _ => return None,
            }
        }
    }
    struct Reads<'p> {
        params: &'p [&'p str],
        detached: Vec<bool>,
        plain: Vec<bool>,
    }
    impl<'a> Visitor<'a> for Reads<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Call(c) = expr {
                if let Expr::Attribute(a) = c.func.as_ref() {
                    if matches!(a.attr.id.as_str(), "detach" | "detach_") {
                        if let Some(n) = root(&a.value) {
                            if let Some(i) = self.params.iter().position(|p| *p == n.id.as_str()) {
                                self.detached[i] = true;
                                return;
                            }
                        }
                    }
                }
            }
            if let Expr::Name(n) = expr {
                if let Some(i) = self.params.iter().position(|p| *p == n.id.as_str()) {
                    self.plain[i] = true;
                }
            }
            walk_expr(self, expr);
        }
    }
    let mut out: HashMap<String, Vec<bool>> = HashMap::default();
    let mut clashing: Vec<String> = Vec::new();
    for stmt in module {
        let Stmt::ClassDef(c) = stmt else { continue };
        for s in &c.body {
            let Stmt::FunctionDef(f) = s else { continue };
            // `self.m(a, b)` hands `a` to the first parameter after
            // `self` (or `cls`), or to the first of a static method.
            let static_method = f.decorator_list.iter().any(|d| {
                dotted(&d.expression).is_some_and(|n| n.rsplit('.').next() == Some("staticmethod"))
            });
            let params: Vec<&str> = positional_names(&f.parameters)
                .into_iter()
                .skip(usize::from(!static_method))
                .collect();
            if params.is_empty() {
                continue;
            }
            let mut reads = Reads {
                params: &params,
                detached: vec![false; params.len()],
                plain: vec![false; params.len()],
            };
            f.body.iter().for_each(|s| reads.visit_stmt(s));
            let only: Vec<bool> = (0..params.len())
                .map(|i| reads.detached[i] && !reads.plain[i])
                .collect();
            let name = f.name.id.to_string();
            match out.get(&name) {
                Some(o) if *o != only => clashing.push(name),
                _ => {
                    out.insert(name, only);
                }
            }
        }
    }
    for c in clashing {
        out.remove(&c);
    }
    out.retain(|_, v| v.iter().any(|d| *d));
    out
}

/// A pass in a top-level function of the module through one of its
/// parameters (`model(images)` in `pgd_attack(model, images, labels)`)
/// goes through what every call of the function in the module hands that
/// parameter, when they all hand the same named model (`pgd_attack(net,
/// x, y)`): the pass is read in the caller's loop, by its names.
fn through_call_sites(module: &[Stmt], passes: &mut [Pass]) {
    struct Sites<'a> {
        name: &'a str,
        calls: Vec<&'a ast::ExprCall>,
    }
    impl<'a> Visitor<'a> for Sites<'a> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Call(c) = expr {
                if matches!(c.func.as_ref(), Expr::Name(n) if n.id.as_str() == self.name) {
                    self.calls.push(c);
                }
            }
            walk_expr(self, expr);
        }
    }
    for stmt in module {
        let Stmt::FunctionDef(f) = stmt else { continue };
        let range = span(f);
        let inside = |p: &Pass| p.span.start >= range.start && p.span.end <= range.end;
        if !passes.iter().any(inside) {
            continue;
        }
        let mut sites = Sites {
            name: f.name.id.as_str(),
            calls: Vec::new(),
        };
        module.iter().for_each(|s| sites.visit_stmt(s));
        if sites.calls.is_empty() {
            continue;
        }
        let positional = positional_names(&f.parameters);
        // What every call hands `param`, when it is one name for all.
        let handed = |param: &str| -> Option<String> {
            let at = positional.iter().position(|p| *p == param);
            let mut all = sites.calls.iter().map(|c| {
                let by_keyword = c.arguments.find_keyword(param).map(|k| &k.value);
                let by_position = at.and_then(|i| {
                    c.arguments
                        .args
                        .iter()
                        .take_while(|a| !a.is_starred_expr())
                        .nth(i)
                });
                by_keyword.or(by_position).and_then(dotted)
            });
            let first = all.next()??;
            all.all(|o| o.as_deref() == Some(first.as_str()))
                .then_some(first)
        };
        for pass in passes.iter_mut().filter(|p| inside(p)) {
            for list in [&mut pass.calls, &mut pass.direct] {
                let mut added = Vec::new();
                for c in list.iter() {
                    let (root, rest) = match c.split_once('.') {
                        Some((r, rest)) => (r, Some(rest)),
                        None => (c.as_str(), None),
                    };
                    if !positional.contains(&root) || root == "self" {
                        continue;
                    }
                    if let Some(model) = handed(root) {
                        added.push(match rest {
                            Some(rest) => format!("{model}.{rest}"),
                            None => model,
                        });
                    }
                }
                for a in added {
                    if !list.contains(&a) {
                        list.push(a);
                    }
                }
            }
        }
    }
}

/// The optimizers a call from another file hands to `f`'s parameters,
/// built over models it hands too, by `f`'s names (`opt_d` over
/// `discriminator` in the caller, `optimizer_d` over `disc` here). An
/// optimizer with a model not handed is left out.
fn received(f: &ast::StmtFunctionDef, call: &HandedOut) -> Vec<(String, Built)> {
    let p = &f.parameters;
    let positional = positional_names(p);
    let keyword = |k: &str| {
        positional.contains(&k)
            || p.kwonlyargs
                .iter()
                .any(|a| a.parameter.name.id.as_str() == k)
    };
    let mut bound: Vec<(&str, &str)> = call
        .positional
        .iter()
        .zip(&positional)
        .filter_map(|(arg, param)| Some((*param, arg.as_deref()?)))
        .collect();
    bound.extend(
        call.keywords
            .iter()
            .filter(|(k, _)| keyword(k))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let translate = |m: &String| {
        bound.iter().find_map(|&(param, arg)| {
            if m == arg {
                Some(param.to_string())
            } else {
                crate::ir::attribute_of(m, arg).then(|| format!("{param}{}", &m[arg.len()..]))
            }
        })
    };
    let mut out = Vec::new();
    for (name, built) in &call.optimizers {
        let Some(&(param, _)) = bound.iter().find(|(_, arg)| arg == name) else {
            continue;
        };
        let models: Option<Vec<String>> = built.models.iter().map(translate).collect();
        let Some(models) = models.filter(|m| !m.is_empty()) else {
            continue;
        };
        let parts: Option<Vec<String>> = built.parts.iter().map(translate).collect();
        let (parts, closed) = match parts {
            Some(parts) => (parts, built.closed),
            None => (models.clone(), false),
        };
        out.push((
            param.to_string(),
            Built {
                models,
                exact: built.exact,
                parts,
                closed,
                tensors: built.tensors.iter().filter_map(translate).collect(),
            },
        ));
    }
    out
}

/// The bodies of every function and method (nested ones too).
fn scopes_in<'a>(body: &'a [Stmt], out: &mut Vec<&'a [Stmt]>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for stmt in body {
        match stmt {
            Stmt::FunctionDef(f) => {
                out.push(&f.body);
                scopes_in(&f.body, out, depth + 1);
            }
            Stmt::ClassDef(c) => scopes_in(&c.body, out, depth + 1),
            _ => nested_bodies(stmt)
                .into_iter()
                .for_each(|b| scopes_in(b, out, depth + 1)),
        }
    }
}

/// A place in a function: a block and a statement's index in it.
#[derive(Clone, Copy)]
struct Frame<'a> {
    block: &'a [Stmt],
    index: usize,
}

/// The passes of one function (or the module's top level).
struct Scope<'s> {
    source: &'s str,
    passes: Vec<Pass>,
    /// The modules the file imports whole.
    modules: &'s [&'s str],
    /// The models the file's optimizers are built over.
    models: &'s [&'s str],
    /// The tensors they take by name ([`Built::tensors`]).
    tensors: &'s [&'s str],
    /// What the module's statements bind, asked once each.
    binder: &'s Binder<'s>,
    /// The methods of the module's classes -> for each parameter after
    /// `self`, whether the method reads it only detached ([`detaching`]).
    detaching: &'s HashMap<String, Vec<bool>>,
}

/// Whether statements bind a name, remembered: a loss's search asks it of
/// every statement before the pass, for every name the loss is computed
/// from, and of every loop it leaves.
struct Binder<'s> {
    source: &'s str,
    /// By name, then by statements (their first one's address, how many).
    memo: RefCell<HashMap<String, Known>>,
}

/// Whether statements bind one name, by statements (their first one's
/// address, how many).
type Known = HashMap<(usize, usize), bool>;

impl Binder<'_> {
    /// Whether `stmt` (nested blocks included, nested functions not) may
    /// bind `name` or a prefix of it.
    fn binds(&self, stmt: &Stmt, name: &str) -> bool {
        self.binds_in(std::slice::from_ref(stmt), name)
    }

    /// [`Binder::binds`], of a block.
    fn binds_in(&self, body: &[Stmt], name: &str) -> bool {
        let key = (body.as_ptr() as usize, body.len());
        if let Some(&known) = self.memo.borrow().get(name).and_then(|m| m.get(&key)) {
            return known;
        }
        let found = binds_in(body, name, self.source);
        self.memo
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .insert(key, found);
        found
    }
}

/// The callees a loss is computed from: with gradients flowing, and
/// under `.detach()`.
#[derive(Default)]
struct Found {
    calls: Vec<String>,
    detached: Vec<String>,
    /// The calls found not through a helper's arguments.
    direct: Vec<String>,
    /// Whether the search is below a `.detach()` now.
    under_detach: bool,
    /// Whether the search is in the arguments of a function of a module
    /// (`rl_utils.compute_advantage(gamma, td_delta)`), which may detach
    /// them.
    under_helper: bool,
}

impl Found {
    fn push(&mut self, callee: String) {
        if self.under_detach {
            self.detached.push(callee);
        } else {
            if !self.under_helper {
                self.direct.push(callee.clone());
            }
            self.calls.push(callee);
        }
    }

    fn extend(&mut self, callee: Option<String>) {
        if let Some(c) = callee {
            self.push(c);
        }
    }
}

/// The frames `at` with the statement `index` of `block` (a branch of the
/// statement `at` ends at) as the innermost.
fn within<'a>(at: &[Frame<'a>], block: &'a [Stmt], index: usize) -> Vec<Frame<'a>> {
    let mut inside = at.to_vec();
    inside.push(Frame { block, index });
    inside
}

/// A plain definition found for a name, or something else binding it.
enum Def<'a> {
    /// `name = value` (or a tuple target holding it, or a prefix of it:
    /// `out = model(x)` for `out.loss`).
    Plain(&'a Expr),
    /// `name += value`: the new value depends on `value` and the old one.
    Augmented(&'a Expr),
    /// An `if` whose branches bind the name only by `name += value`
    /// statements of their own (`if step > start: g_loss += adv_loss`):
    /// each such statement's place (the branch, its index). A pass meant
    /// to include a term on some iterations reaches what the term does.
    Branches(Vec<(&'a [Stmt], usize)>),
    /// An `if` with an `else` whose every branch binds the name by one
    /// plain assignment of its own (`if conv: z = z.view(n, d, 1, 1)
    /// else: z = z.view(n, d)`): each such statement's place. The value
    /// is certainly computed from what every branch's value is.
    Every(Vec<(&'a [Stmt], usize)>),
    /// A `with` block that binds the name in its body (`with autocast():
    /// g_loss = ...`): the body always runs, the search goes on inside it.
    Within(&'a [Stmt]),
    /// Bound some other way, or maybe bound (in a branch, a loop).
    Other,
}

impl<'s> Scope<'s> {
    /// Walks a block; `frames` is the place of the block's statement list
    /// in the function.
    fn block<'a>(&mut self, block: &'a [Stmt], frames: &mut Vec<Frame<'a>>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for (index, stmt) in block.iter().enumerate() {
            frames.push(Frame { block, index });
            if let Stmt::Expr(e) = stmt {
                if let Expr::Call(call) = e.value.as_ref() {
                    self.backward(call, frames);
                }
            }
            if !matches!(stmt, Stmt::FunctionDef(_) | Stmt::ClassDef(_)) {
                for b in nested_bodies(stmt) {
                    self.block(b, frames, depth + 1);
                }
            }
            frames.pop();
        }
    }

    /// A statement `loss.backward()` (`accelerator.backward(loss)`,
    /// `self.manual_backward(loss)`, `scaler.scale(loss).backward()`): what
    /// its loss reaches.
    fn backward(&mut self, call: &ast::ExprCall, frames: &[Frame]) {
        let Expr::Attribute(a) = call.func.as_ref() else {
            return;
        };
        let method = a.attr.id.as_str();
        if !matches!(method, "backward" | "manual_backward") {
            return;
        }
        // `loss.backward(inputs=[...])` accumulates into those tensors only.
        if call.arguments.find_keyword("inputs").is_some() {
            return;
        }
        let receiver = dotted(&a.value).unwrap_or_default();
        let last = receiver
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let by_argument = method == "manual_backward"
            || [
                "accelerator",
                "fabric",
                "engine",
                "self",
                "trainer",
                "autograd",
            ]
            .iter()
            .any(|w| last.contains(w));
        let loss = if by_argument {
            match call.arguments.args.first() {
                Some(arg) => arg,
                None => return,
            }
        } else {
            a.value.as_ref()
        };
        let mut budget = BUDGET;
        let mut found = Found::default();
        self.calls_of(loss, frames, &mut budget, &mut found, 0);
        let Found {
            mut calls,
            mut detached,
            mut direct,
            ..
        } = found;
        calls.sort();
        calls.dedup();
        direct.sort();
        direct.dedup();
        detached.sort();
        detached.dedup();
        // `scaler.scale(g_loss)` is named by its loss.
        let named = match loss {
            Expr::Call(c)
                if matches!(c.func.as_ref(), Expr::Attribute(a) if a.attr.id.as_str() == "scale")
                    && c.arguments.args.len() == 1 =>
            {
                &c.arguments.args[0]
            }
            _ => loss,
        };
        let s = span(named);
        self.passes.push(Pass {
            span: span(call),
            loss: self.source.get(s.start..s.end).unwrap_or("").to_string(),
            calls,
            detached,
            direct,
        });
    }

    /// The callees whose output `expr`, read at the statement `frames`
    /// ends at, is certainly computed from with gradients flowing (and,
    /// apart, those it reads under `.detach()`).
    fn calls_of(
        &self,
        expr: &Expr,
        frames: &[Frame],
        budget: &mut usize,
        out: &mut Found,
        depth: usize,
    ) {
        if depth > 60 || *budget == 0 {
            return;
        }
        match expr {
            Expr::Call(call) => {
                match call.func.as_ref() {
                    Expr::Attribute(a) => {
                        let method = a.attr.id.as_str();
                        if matches!(method, "detach" | "detach_") && out.under_detach {
                            // Detached again (`fake = out.detach()`, then
                            // `net_d(fake.detach())`): still what it read.
                            self.calls_of(&a.value, frames, budget, out, depth + 1);
                            return;
                        }
                        if matches!(method, "detach" | "detach_") {
                            // What the detached value was computed from:
                            // a budget of its own, the gradients' search
                            // keeps its own.
                            let mut apart = *budget;
                            out.under_detach = true;
                            self.calls_of(&a.value, frames, &mut apart, out, depth + 1);
                            out.under_detach = false;
                            return;
                        }
                        if STOP_METHODS.contains(&method) || MADE_LIKE.contains(&method) {
                            return;
                        }
                        if let Some(d) = dotted(&call.func) {
                            out.push(d);
                        }
                        if method == "forward" {
                            out.extend(dotted(&a.value));
                        }
                        // The receiver: a tensor (`d_out.mean()`) or an object.
                        self.calls_of(&a.value, frames, budget, out, depth + 1);
                        // A model's own method other than its forward pass
                        // (`disc.calc_gp(real, fake)`, a gradient penalty
                        // on a detached mix): what it does with its
                        // arguments is not known.
                        if method != "forward"
                            && dotted(&a.value).is_some_and(|r| self.models.contains(&r.as_str()))
                        {
                            return;
                        }
                    }
                    func => match dotted(func) {
                        Some(d) => {
                            let last = d.rsplit('.').next().unwrap_or("");
                            let numeric =
                                ["np.", "numpy.", "math."].iter().any(|p| d.starts_with(p));
                            if STOP_FUNCTIONS.contains(&last)
                                || MADE_LIKE.contains(&last)
                                || numeric
                            {
                                return;
                            }
                            out.push(d);
                        }
                        None => self.calls_of(func, frames, budget, out, depth + 1),
                    },
                }
                // A function of another module, not torch's: its arguments
                // may reach the result detached (`compute_advantage`).
                let helper = dotted(&call.func).is_some_and(|d| {
                    d.split_once('.')
                        .is_some_and(|(root, _)| self.modules.contains(&root))
                });
                let outer = out.under_helper;
                out.under_helper |= helper;
                // A method of the module's own class that detaches what it
                // is handed (`self.loss_d(images, reconstruction)` reading
                // `reconstruction.detach()`): nothing flows from it.
                let detached_params = match call.func.as_ref() {
                    Expr::Attribute(a) if dotted(&a.value).as_deref() == Some("self") => {
                        self.detaching.get(a.attr.id.as_str())
                    }
                    _ => None,
                };
                for (i, arg) in call.arguments.args.iter().enumerate() {
                    if detached_params.is_some_and(|d| d.get(i) == Some(&true)) {
                        continue;
                    }
                    self.calls_of(arg, frames, budget, out, depth + 1);
                }
                for k in call.arguments.keywords.iter() {
                    self.calls_of(&k.value, frames, budget, out, depth + 1);
                }
                out.under_helper = outer;
            }
            Expr::Attribute(a) => {
                if STOP_ATTRIBUTES.contains(&a.attr.id.as_str()) {
                    return;
                }
                match dotted(expr) {
                    Some(d) => {
                        self.read_tensor(&d, out);
                        self.calls_of_name(&d, frames, budget, out, depth + 1)
                    }
                    None => self.calls_of(&a.value, frames, budget, out, depth + 1),
                }
            }
            Expr::Name(n) => {
                self.read_tensor(n.id.as_str(), out);
                self.calls_of_name(n.id.as_str(), frames, budget, out, depth + 1)
            }
            Expr::BinOp(b) => {
                self.calls_of(&b.left, frames, budget, out, depth + 1);
                self.calls_of(&b.right, frames, budget, out, depth + 1);
            }
            Expr::UnaryOp(u) if u.op != UnaryOp::Not => {
                self.calls_of(&u.operand, frames, budget, out, depth + 1)
            }
            Expr::Subscript(s) => self.calls_of(&s.value, frames, budget, out, depth + 1),
            Expr::Starred(s) => self.calls_of(&s.value, frames, budget, out, depth + 1),
            Expr::Tuple(t) => t
                .elts
                .iter()
                .for_each(|e| self.calls_of(e, frames, budget, out, depth + 1)),
            Expr::List(l) => l
                .elts
                .iter()
                .for_each(|e| self.calls_of(e, frames, budget, out, depth + 1)),
            // A dict of outputs carries its values (`{"logits": out}`).
            Expr::Dict(d) => d
                .items
                .iter()
                .for_each(|i| self.calls_of(&i.value, frames, budget, out, depth + 1)),
            // Comparisons, boolean operators, conditional expressions,
            // comprehensions, lambdas, literals: nothing certain.
            _ => {}
        }
    }

    /// A tensor an optimizer takes by name (`Adam([self.log_alpha])`),
    /// read with its gradient: the loss goes through it as through a
    /// model (SAC's temperature in the policy loss).
    fn read_tensor(&self, name: &str, out: &mut Found) {
        if self.tensors.contains(&name) {
            out.push(name.to_string());
        }
    }

    /// The callees the value `name` holds at the statement `frames` ends
    /// at is certainly computed from.
    fn calls_of_name(
        &self,
        name: &str,
        frames: &[Frame],
        budget: &mut usize,
        out: &mut Found,
        depth: usize,
    ) {
        *budget = budget.saturating_sub(1);
        if *budget == 0 {
            return;
        }
        for level in (0..frames.len()).rev() {
            let frame = frames[level];
            // Leaving a compound statement upwards: the statements before
            // it hold the value only if it does not bind the name in a way
            // that may reach here (a loop's later iterations, a `try`
            // body before its handler, a `with ... as name`).
            if level + 1 < frames.len() && !self.passes_up(frame, frames[level + 1].block, name) {
                return;
            }
            for index in (0..frame.index).rev() {
                let stmt = &frame.block[index];
                let Some(def) = definition(stmt, name, self.binder) else {
                    continue;
                };
                let mut at: Vec<Frame> = frames[..level].to_vec();
                at.push(Frame {
                    block: frame.block,
                    index,
                });
                match def {
                    Def::Plain(value) => {
                        if !self.without_grad(&at) {
                            self.calls_of(value, &at, budget, out, depth + 1);
                        }
                        return;
                    }
                    Def::Augmented(value) => {
                        if !self.without_grad(&at) {
                            self.calls_of(value, &at, budget, out, depth + 1);
                        }
                    }
                    Def::Branches(places) => {
                        for (branch, i) in places {
                            let Stmt::AugAssign(a) = &branch[i] else {
                                continue;
                            };
                            let inside = within(&at, branch, i);
                            if !self.without_grad(&inside) {
                                self.calls_of(&a.value, &inside, budget, out, depth + 1);
                            }
                        }
                    }
                    Def::Every(places) => {
                        let mut each = Vec::new();
                        for (branch, i) in places {
                            let Stmt::Assign(a) = &branch[i] else {
                                return;
                            };
                            let inside = within(&at, branch, i);
                            let mut found = Found {
                                under_detach: out.under_detach,
                                under_helper: out.under_helper,
                                ..Found::default()
                            };
                            if !self.without_grad(&inside) {
                                self.calls_of(&a.value, &inside, budget, &mut found, depth + 1);
                            }
                            each.push(found);
                        }
                        let common = |list: fn(&Found) -> &Vec<String>| -> Vec<String> {
                            let Some((first, rest)) = each.split_first() else {
                                return Vec::new();
                            };
                            list(first)
                                .iter()
                                .filter(|c| rest.iter().all(|f| list(f).contains(c)))
                                .cloned()
                                .collect()
                        };
                        out.calls.extend(common(|f| &f.calls));
                        out.direct.extend(common(|f| &f.direct));
                        out.detached.extend(common(|f| &f.detached));
                        return;
                    }
                    Def::Within(body) => {
                        // From the end of the block, then on before it.
                        at.push(Frame {
                            block: body,
                            index: body.len(),
                        });
                        self.calls_of_name(name, &at, budget, out, depth + 1);
                        return;
                    }
                    Def::Other => return,
                }
            }
        }
    }

    /// Whether the value a name had before `frame`'s compound statement
    /// still holds inside its block `inner` (at a statement where the block
    /// itself has not bound the name before).
    fn passes_up(&self, frame: Frame, inner: &[Stmt], name: &str) -> bool {
        let stmt = &frame.block[frame.index];
        match stmt {
            // A later iteration may hold a value bound after the use.
            Stmt::For(_) | Stmt::While(_) => !self.binder.binds(stmt, name),
            Stmt::Try(t) => {
                std::ptr::eq(inner.as_ptr(), t.body.as_ptr())
                    || !self.binder.binds_in(&t.body, name)
            }
            Stmt::With(w) => !with_binds(w, name),
            Stmt::If(i) => !self.text(i.test.as_ref()).contains(":="),
            Stmt::Match(m) => !self.text(m.subject.as_ref()).contains(":="),
            _ => true,
        }
    }

    /// Whether the statement `frames` ends at runs with gradients off
    /// (`with torch.no_grad():` around it).
    fn without_grad(&self, frames: &[Frame]) -> bool {
        frames[..frames.len().saturating_sub(1)]
            .iter()
            .any(|f| match &f.block[f.index] {
                Stmt::With(w) => w.items.iter().any(|i| {
                    let t = self.text(&i.context_expr);
                    t.contains("no_grad")
                        || t.contains("inference_mode")
                        || t.contains("set_grad_enabled")
                }),
                _ => false,
            })
    }

    fn text(&self, node: &impl ruff_text_size::Ranged) -> &str {
        let s = span(node);
        self.source.get(s.start..s.end).unwrap_or("")
    }
}

/// Whether binding `bound` changes what `name` reads: the same name, or a
/// prefix of it (`out` for `out.loss`).
fn covers(bound: &str, name: &str) -> bool {
    bound == name || crate::ir::attribute_of(name, bound)
}

/// Whether a `with` statement's items bind `name` (`with open(p) as name:`).
fn with_binds(w: &ast::StmtWith, name: &str) -> bool {
    w.items.iter().any(|i| {
        i.optional_vars.as_deref().is_some_and(|v| {
            let mut names = Vec::new();
            target_names(v, &mut names);
            names.iter().any(|n| covers(n, name))
        })
    })
}

/// What `stmt` does to `name`, if it binds it.
fn definition<'a>(stmt: &'a Stmt, name: &str, binder: &Binder) -> Option<Def<'a>> {
    let source = binder.source;
    let plain = |targets: &[&Expr], value: &'a Expr| {
        let mut names = Vec::new();
        for t in targets {
            target_names(t, &mut names);
        }
        let starred = targets.iter().any(|t| match t {
            Expr::Tuple(t) => t.elts.iter().any(|e| matches!(e, Expr::Starred(_))),
            Expr::List(l) => l.elts.iter().any(|e| matches!(e, Expr::Starred(_))),
            _ => false,
        });
        names.iter().any(|n| covers(n, name)).then_some(if starred {
            Def::Other
        } else {
            Def::Plain(value)
        })
    };
    let text = {
        let s = span(stmt);
        source.get(s.start..s.end).unwrap_or("")
    };
    let def = match stmt {
        Stmt::Assign(a) => {
            let targets: Vec<&Expr> = a.targets.iter().collect();
            plain(&targets, &a.value)
        }
        Stmt::AnnAssign(a) => match &a.value {
            Some(v) => plain(&[&a.target], v),
            None => None,
        },
        Stmt::AugAssign(a) => {
            let mut names = Vec::new();
            target_names(&a.target, &mut names);
            names
                .iter()
                .any(|n| n == name)
                .then_some(Def::Augmented(&a.value))
        }
        Stmt::If(i) if !text.contains(":=") => augmented_in_branches(i, name, binder),
        Stmt::With(w) if !text.contains(":=") => {
            (!with_binds(w, name) && binder.binds_in(&w.body, name)).then_some(Def::Within(&w.body))
        }
        _ => None,
    };
    // A walrus anywhere in the statement may bind it too.
    if text.contains(":=") {
        return binder.binds(stmt, name).then_some(Def::Other);
    }
    def.or_else(|| binder.binds(stmt, name).then_some(Def::Other))
}

/// The `name += value` statements of `stmt`'s branches, when they are
/// all that binds `name` there.
fn augmented_in_branches<'a>(
    stmt: &'a ast::StmtIf,
    name: &str,
    binder: &Binder,
) -> Option<Def<'a>> {
    if let Some(every) = assigned_in_every_branch(stmt, name, binder) {
        return Some(every);
    }
    let mut places = Vec::new();
    let branches =
        std::iter::once(&stmt.body).chain(stmt.elif_else_clauses.iter().map(|c| &c.body));
    for body in branches {
        for (i, s) in body.iter().enumerate() {
            if !binder.binds(s, name) {
                continue;
            }
            match s {
                Stmt::AugAssign(a) if matches!(a.target.as_ref(), Expr::Name(n) if n.id.as_str() == name) => {
                    places.push((body.as_slice(), i))
                }
                _ => return Some(Def::Other),
            }
        }
    }
    (!places.is_empty()).then_some(Def::Branches(places))
}

/// [`Def::Every`]: an `if` with an `else`, every branch of which binds
/// `name` by exactly one plain assignment of its own (`name = value`, at
/// the branch's top level).
fn assigned_in_every_branch<'a>(
    stmt: &'a ast::StmtIf,
    name: &str,
    binder: &Binder,
) -> Option<Def<'a>> {
    if stmt.elif_else_clauses.last()?.test.is_some() {
        return None;
    }
    let branches =
        std::iter::once(&stmt.body).chain(stmt.elif_else_clauses.iter().map(|c| &c.body));
    let mut places = Vec::new();
    for body in branches {
        let binding: Vec<usize> = (0..body.len())
            .filter(|&i| binder.binds(&body[i], name))
            .collect();
        let [i] = binding.as_slice() else {
            return None;
        };
        match &body[*i] {
            Stmt::Assign(a) if matches!(a.targets.as_slice(), [Expr::Name(n)] if n.id.as_str() == name) =>
            {
                places.push((body.as_slice(), *i));
            }
            _ => return None,
        }
    }
    Some(Def::Every(places))
}

fn binds_in(body: &[Stmt], name: &str, source: &str) -> bool {
    let mut names = Vec::new();
    assigned_names(body, &mut names, 0);
    if names.iter().any(|n| covers(n, name)) {
        return true;
    }
    let root = name.split('.').next().unwrap_or(name);
    // A walrus anywhere, by the text: rare, and it may rebind it.
    let walrus = body.iter().any(|stmt| {
        let s = span(stmt);
        let text = source.get(s.start..s.end).unwrap_or("");
        text.contains(":=") && text.contains(root)
    });
    walrus || binds_otherwise(body, root, 0)
}

/// Whether `body` binds `root` other than by assignment: `del`, `import`,
/// `global`, `nonlocal`, a nested `def` or `class`, an `except ... as`.
fn binds_otherwise(body: &[Stmt], root: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    let first = |dotted: &str| dotted.split('.').next() == Some(root);
    body.iter().any(|stmt| {
        let here = match stmt {
            Stmt::Delete(d) => d.targets.iter().any(|t| {
                let mut names = Vec::new();
                target_names(t, &mut names);
                names.iter().any(|n| first(n))
            }),
            Stmt::Import(i) => i.names.iter().any(|a| {
                a.asname
                    .as_ref()
                    .map_or_else(|| first(a.name.id.as_str()), |n| n.id.as_str() == root)
            }),
            Stmt::ImportFrom(i) => i.names.iter().any(|a| {
                a.asname.as_ref().unwrap_or(&a.name).id.as_str() == root
                    || a.name.id.as_str() == "*"
            }),
            Stmt::Global(g) => g.names.iter().any(|n| n.id.as_str() == root),
            Stmt::Nonlocal(g) => g.names.iter().any(|n| n.id.as_str() == root),
            Stmt::FunctionDef(f) => return f.name.id.as_str() == root,
            Stmt::ClassDef(c) => return c.name.id.as_str() == root,
            Stmt::Try(t) => t.handlers.iter().any(|h| match h {
                ast::ExceptHandler::ExceptHandler(h) => {
                    h.name.as_ref().is_some_and(|n| n.id.as_str() == root)
                }
            }),
            _ => false,
        };
        here || nested_bodies(stmt)
            .into_iter()
            .any(|b| binds_otherwise(b, root, depth + 1))
    })
}

/// The parameters of a function (`params`) that its body stores, as they
/// are (or moved: `critic.to(device)`), in an attribute (`self.critic = critic`), each once: (parameter,
/// attribute). Not in nested functions or classes.
fn stored_parameters(
    body: &[Stmt],
    params: &[String],
    out: &mut Vec<(String, String)>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    for stmt in body {
        match stmt {
            Stmt::Assign(a) if a.targets.len() == 1 => {
                // `critic`, or `critic.to(device)` (a module's `to`
                // returns the module itself).
                let mut value = a.value.as_ref();
                while let Expr::Call(c) = value {
                    match c.func.as_ref() {
                        Expr::Attribute(m)
                            if matches!(
                                m.attr.id.as_str(),
                                "to" | "cuda" | "cpu" | "float" | "double" | "half" | "train"
                            ) =>
                        {
                            value = &m.value
                        }
                        _ => break,
                    }
                }
                if let (Expr::Attribute(_), Expr::Name(n)) = (&a.targets[0], value) {
                    let p = n.id.as_str();
                    if params.iter().any(|x| x == p) && !out.iter().any(|(x, _)| x == p) {
                        if let Some(attribute) = dotted(&a.targets[0]) {
                            out.push((p.to_string(), attribute));
                        }
                    }
                }
            }
            Stmt::FunctionDef(_) | Stmt::ClassDef(_) => {}
            _ => {
                for b in nested_bodies(stmt) {
                    stored_parameters(b, params, out, depth + 1);
                }
            }
        }
    }
}

/// Finds what optimizers are built over and what the module may freeze.
struct Finder<'r> {
    reach: &'r mut Reach,
    /// The module's text.
    source: &'r str,
    /// The enclosing `for` loops (of the enclosing function): their
    /// targets' names and iterables.
    loops: Vec<(Vec<String>, Expr)>,
    /// The parameters of the enclosing functions.
    params: Vec<Vec<String>>,
    /// The enclosing classes' names, innermost last.
    classes: Vec<String>,
    /// The methods of the module's classes (`Class.method`).
    defined: Vec<String>,
    /// Of the enclosing function, its parameters it stores in attributes
    /// (`self.critic = critic`): (parameter, attribute).
    stored: Vec<Vec<(String, String)>>,
    /// Names bound to something else than an optimizer constructor.
    others: Vec<String>,
    /// Functions (by their own name) -> what their one `return` gives, by
    /// position (`return opt_g, opt_d`: the names, `None` for another
    /// expression).
    returns: HashMap<String, Vec<Option<String>>>,
    /// The same for Lightning's `self.optimizers()`: what the function's
    /// one `return` lists first (`return [opt_g, opt_d], [sched_g]`).
    listed_first: HashMap<String, Vec<Option<String>>>,
    /// `self.opt_g, self.opt_d = self.configure_optimizers()`: each name
    /// bound, the function called, and the position taken.
    from_calls: Vec<(String, String, usize)>,
    /// In the enclosing function, names bound to lists of parameters
    /// (`params = list(net_g.parameters()) + list(net_e.parameters())`,
    /// `params = []` then `params.append(p)` in a loop over
    /// `net.named_parameters()`): what they hold.
    lists: HashMap<String, Built>,
    depth: usize,
}

impl<'a> Visitor<'a> for Finder<'_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        if self.depth > MAX_DEPTH {
            return;
        }
        self.depth += 1;
        match stmt {
            Stmt::Assign(a) => {
                for t in &a.targets {
                    self.assigned(t, &a.value);
                }
            }
            Stmt::AnnAssign(a) => {
                if let Some(v) = &a.value {
                    self.assigned(&a.target, v);
                }
            }
            Stmt::AugAssign(a) => {
                self.freeze_target(&a.target, None);
                if let Expr::Name(n) = a.target.as_ref() {
                    let added = parameters_in(&a.value, &self.lists);
                    self.extend_list(n.id.as_str(), added);
                }
            }
            _ => {}
        }
        if let Stmt::FunctionDef(f) = stmt {
            // A method's by `Class.method` too: two classes of a file may
            // both define `configure_optimizers`.
            let qualified = self
                .classes
                .last()
                .map(|class| format!("{class}.{}", f.name.id.as_str()));
            let keys: Vec<String> = qualified
                .iter()
                .cloned()
                .chain([f.name.id.to_string()])
                .collect();
            for (map, r) in [
                (&mut self.listed_first, listed_first_return(&f.body)),
                (&mut self.returns, one_return(&f.body)),
            ] {
                if let Some(r) = r {
                    for k in &keys {
                        map.insert(k.clone(), r.clone());
                    }
                }
            }
            self.defined.extend(qualified);
            let names: Vec<String> = parameter_names(&f.parameters).map(str::to_string).collect();
            let mut stored = Vec::new();
            stored_parameters(&f.body, &names, &mut stored, 0);
            self.stored.push(stored);
            self.params.push(names);
            let loops = std::mem::take(&mut self.loops);
            let lists = std::mem::take(&mut self.lists);
            for s in f.body.iter() {
                self.visit_stmt(s);
            }
            self.lists = lists;
            self.loops = loops;
            self.params.pop();
            self.stored.pop();
        } else if let Stmt::ClassDef(c) = stmt {
            self.classes.push(c.name.id.to_string());
            walk_stmt(self, stmt);
            self.classes.pop();
        } else if let Stmt::For(f) = stmt {
            let mut names = Vec::new();
            target_names(&f.target, &mut names);
            self.visit_expr(&f.iter);
            self.loops.push((names, (*f.iter).clone()));
            for s in f.body.iter().chain(f.orelse.iter()) {
                self.visit_stmt(s);
            }
            self.loops.pop();
        } else {
            walk_stmt(self, stmt);
        }
        self.depth -= 1;
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Expr::Call(call) = expr {
            self.freeze_call(call);
            self.list_grown(call);
        }
        walk_expr(self, expr);
    }
}

impl Finder<'_> {
    /// `built` with the enclosing function's parameters it stores in
    /// attributes named by those attributes.
    fn as_stored(&self, built: &Built) -> Built {
        let Some(stored) = self.stored.last().filter(|s| !s.is_empty()) else {
            return built.clone();
        };
        let rename = |m: &String| {
            stored
                .iter()
                .find(|(p, _)| p == m)
                .map_or_else(|| m.clone(), |(_, a)| a.clone())
        };
        Built {
            models: built.models.iter().map(rename).collect(),
            parts: built.parts.iter().map(rename).collect(),
            tensors: built.tensors.iter().map(rename).collect(),
            ..built.clone()
        }
    }

    /// `target = value`: an optimizer built, or a freeze
    /// (`p.requires_grad = False`).
    fn assigned(&mut self, target: &Expr, value: &Expr) {
        self.freeze_target(target, Some(value));
        let mut names = Vec::new();
        target_names(target, &mut names);
        let built = is_optimizer_constructor(value).then(|| built_over(value, &self.lists));
        if let Expr::Name(n) = target {
            self.list_bound(n.id.as_str(), value);
        }
        if built.is_none() {
            if let Some(function) = called_function(value) {
                // Called in a class: its own method first (see
                // `optimizers_returned`).
                let function = match self.classes.last() {
                    Some(class) => format!("{class}.{function}"),
                    None => function,
                };
                if let Expr::Tuple(_) | Expr::List(_) | Expr::Name(_) | Expr::Attribute(_) = target
                {
                    let single = !matches!(target, Expr::Tuple(_) | Expr::List(_));
                    let whole = names.len() == 1 && single;
                    let positions = match target {
                        Expr::Tuple(t) => t.elts.iter().map(dotted).collect(),
                        Expr::List(l) => l.elts.iter().map(dotted).collect(),
                        _ => vec![names.first().cloned()],
                    };
                    if whole || positions.iter().all(Option::is_some) {
                        for (i, name) in positions.into_iter().flatten().enumerate() {
                            self.from_calls.push((
                                name,
                                function.clone(),
                                if whole { usize::MAX } else { i },
                            ));
                        }
                        return;
                    }
                }
            }
        }
        for name in names {
            match &built {
                Some(b) if matches!(target, Expr::Name(_)) => {
                    self.reach.optimizers.push((name, b.clone()));
                }
                // Kept in an attribute, it outlives the function: its models
                // are known by the attributes the function stores them in
                // (`self.critic = critic; self.opt = Adam(critic.parameters())`,
                // then `self.critic(s, a)` in another method).
                Some(b) if matches!(target, Expr::Attribute(_)) => {
                    let b = self.as_stored(b);
                    self.reach.optimizers.push((name, b));
                }
                _ => {
                    // Bound otherwise: known only when the value wraps the
                    // same optimizer (`opt = accelerator.prepare(opt)`).
                    let text = self.source.get(span(value).start..span(value).end);
                    let wraps = text.is_some_and(|t| t.contains(name.as_str())) && {
                        let mut read = Vec::new();
                        collect_dotted(value, &mut read);
                        read.contains(&name)
                    };
                    if !wraps {
                        self.others.push(name);
                    }
                }
            }
        }
    }

    /// `name = value`: a list of parameters, or something else.
    fn list_bound(&mut self, name: &str, value: &Expr) {
        let empty = match value {
            Expr::List(l) => l.elts.is_empty(),
            Expr::Call(c) => {
                dotted(&c.func).as_deref() == Some("list") && c.arguments.args.is_empty()
            }
            _ => false,
        };
        // Only a value that names parameters, or a list of them, can be one.
        let text = self
            .source
            .get(span(value).start..span(value).end)
            .unwrap_or("");
        let may_hold =
            text.contains("parameters") || self.lists.keys().any(|l| text.contains(l.as_str()));
        let held = if empty {
            Built {
                exact: true,
                closed: true,
                ..Built::default()
            }
        } else if may_hold {
            parameters_in(value, &self.lists)
        } else {
            Built::unknown()
        };
        if held.closed || empty {
            self.lists.insert(name.to_string(), held);
        } else {
            self.lists.remove(name);
        }
    }

    /// `name += more`, `name.extend(more)`: the list holds those too.
    fn extend_list(&mut self, name: &str, more: Built) {
        if let Some(held) = self.lists.get_mut(name) {
            held.models.extend(more.models);
            held.parts.extend(more.parts);
            held.tensors.extend(more.tensors);
            held.exact &= more.exact;
            held.closed &= more.closed;
        }
    }

    /// `params.append(p)` (`p` a loop variable over `net.parameters()` or
    /// `net.named_parameters()`: a part of `net`), `params.extend(...)`.
    fn list_grown(&mut self, call: &ast::ExprCall) {
        let Expr::Attribute(a) = call.func.as_ref() else {
            return;
        };
        let Expr::Name(list) = a.value.as_ref() else {
            return;
        };
        let name = list.id.as_str();
        if !self.lists.contains_key(name) {
            return;
        }
        let Some(arg) = call.arguments.args.first() else {
            return;
        };
        let more = match a.attr.id.as_str() {
            "extend" => parameters_in(arg, &self.lists),
            "append" | "insert" => {
                let arg = if a.attr.id.as_str() == "insert" {
                    call.arguments.args.get(1).unwrap_or(arg)
                } else {
                    arg
                };
                let owner = dotted(arg).and_then(|v| {
                    let (_, iter) = self.loops.iter().rev().find(|(t, _)| t.contains(&v))?;
                    let Expr::Call(c) = iter else { return None };
                    let Expr::Attribute(m) = c.func.as_ref() else {
                        return None;
                    };
                    matches!(m.attr.id.as_str(), "parameters" | "named_parameters")
                        .then(|| dotted(&m.value))
                        .flatten()
                });
                Built {
                    exact: false,
                    closed: owner.is_some(),
                    parts: owner.into_iter().collect(),
                    models: Vec::new(),
                    tensors: Vec::new(),
                }
            }
            _ => return,
        };
        self.extend_list(name, more);
    }

    /// The optimizers bound to what a function of the file returns
    /// (`self.opt_g, self.opt_d = self.configure_optimizers()` with
    /// `return opt_g, opt_d`) are the optimizers it built; the other names
    /// bound so are bound to something else.
    fn optimizers_returned(&mut self) {
        // What constructors built, not what the names bound here add.
        let constructed = self.reach.optimizers.clone();
        for (name, function, at) in std::mem::take(&mut self.from_calls) {
            let (class, bare) = match function.rsplit_once('.') {
                Some((c, b)) => (Some(c), b),
                None => (None, function.as_str()),
            };
            let defines = |m: &str| {
                class.is_some_and(|c| self.defined.iter().any(|d| *d == format!("{c}.{m}")))
            };
            // Lightning's `self.optimizers()`, unless the class defines its
            // own: what `configure_optimizers` lists first (a list, or a
            // list then the schedulers').
            let lightning = bare == "optimizers" && !defines("optimizers");
            let (returns, bare) = if lightning {
                (&self.listed_first, "configure_optimizers")
            } else {
                (&self.returns, bare)
            };
            let qualified = class.map(|c| format!("{c}.{bare}"));
            // The class's own method, or a function of the module when the
            // class defines none of that name.
            let returned = match qualified.filter(|_| defines(bare)) {
                Some(q) => returns.get(&q),
                None => returns.get(bare),
            }
            .and_then(|r| match (at, r.as_slice()) {
                (usize::MAX, [one]) => one.clone(),
                (usize::MAX, _) => None,
                (i, r) if r.len() > 1 => r.get(i).cloned().flatten(),
                _ => None,
            });
            let mut built: Vec<Built> = Vec::new();
            for (_, b) in constructed
                .iter()
                .filter(|(o, _)| returned.as_ref() == Some(o))
            {
                if !built.contains(b) {
                    built.push(b.clone());
                }
            }
            if built.is_empty() {
                self.others.push(name);
            } else {
                for b in built {
                    self.reach.optimizers.push((name.clone(), b));
                }
                self.reach.returned.push(name);
            }
        }
    }

    /// `x.requires_grad = ...`: `x` (or what a loop variable `x` runs over)
    /// may be frozen (`= True` unfreezes).
    fn freeze_target(&mut self, target: &Expr, value: Option<&Expr>) {
        if value.is_some_and(|v| matches!(v, Expr::BooleanLiteral(b) if b.value)) {
            return;
        }
        if let Expr::Attribute(a) = target {
            if a.attr.id.as_str() == "requires_grad" {
                match dotted(&a.value) {
                    Some(owner) => self.frozen(owner),
                    None => self.reach.freezes_unnamed = true,
                }
            }
        }
    }

    /// A call that may freeze parameters: `m.requires_grad_(False)`,
    /// `set_requires_grad([net_d], False)`, `freeze(net_d)`,
    /// `self.toggle_optimizer(opt)`.
    fn freeze_call(&mut self, call: &ast::ExprCall) {
        let func = dotted(&call.func).unwrap_or_default();
        let last = func.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
        if !(last.contains("requires_grad") || last.contains("freeze") || last.contains("toggle")) {
            return;
        }
        // Lightning's `untoggle_optimizer`, `unfreeze()`: gradients back on.
        if last.contains("untoggle") || last.contains("unfreeze") {
            return;
        }
        if last.contains("toggle_optimizer") {
            self.reach.freezes_unnamed = true;
            return;
        }
        // `m.requires_grad_()`, `m.requires_grad_(True)`,
        // `set_requires_grad(net_d, True)`: unfrozen.
        if last.contains("requires_grad") && unfreezes(call) {
            return;
        }
        let mut named = Vec::new();
        for arg in call.arguments.args.iter() {
            collect_dotted(arg, &mut named);
        }
        let receiver = match call.func.as_ref() {
            Expr::Attribute(a) => dotted(&a.value),
            _ => None,
        };
        if last == "requires_grad_" || named.is_empty() {
            match receiver {
                Some(r) if r != "self" => named.push(r),
                _ => {
                    if named.is_empty() {
                        self.reach.freezes_unnamed = true;
                    }
                }
            }
        }
        for n in named {
            self.frozen(n);
        }
    }

    /// `name` may be frozen; a loop variable stands for what its loop runs
    /// over (`for p in net_d.parameters()`, `for m in [net_d, net_g]`); one
    /// over an unknown list, or a parameter of the enclosing function (a
    /// helper `freeze(m)`), for anything.
    fn frozen(&mut self, name: String) {
        self.frozen_within(name, self.loops.len());
    }

    fn frozen_within(&mut self, name: String, loops: usize) {
        let root = name.split('.').next().unwrap_or(&name).to_string();
        if root != "self" && self.params.iter().flatten().any(|p| *p == root) {
            self.reach.freezes_unnamed = true;
            return;
        }
        let Some(at) = self.loops[..loops]
            .iter()
            .rposition(|(targets, _)| targets.contains(&root))
        else {
            self.reach.frozen.push(name);
            return;
        };
        let iter = self.loops[at].1.clone();
        if !iter_has_modules(&iter) {
            self.reach.freezes_unnamed = true;
            return;
        }
        let mut owners = Vec::new();
        collect_dotted(&iter, &mut owners);
        if owners.is_empty() {
            self.reach.freezes_unnamed = true;
            return;
        }
        for o in owners {
            let o = [
                "parameters",
                "named_parameters",
                "modules",
                "children",
                "named_modules",
            ]
            .iter()
            .find_map(|m| o.strip_suffix(&format!(".{m}")).map(str::to_string))
            .unwrap_or(o);
            self.frozen_within(o, at);
        }
    }
}

/// The function a call calls, by its own name: `f(...)` or
/// `self.f(...)`.
fn called_function(value: &Expr) -> Option<String> {
    let Expr::Call(call) = value else {
        return None;
    };
    let callee = dotted(&call.func)?;
    let name = callee.strip_prefix("self.").unwrap_or(&callee);
    (!name.contains('.')).then(|| name.to_string())
}

/// What a function body's only `return` gives, by position (a tuple's
/// elements, or the one value), when it has exactly one (nested functions
/// and classes not searched).
fn one_return(body: &[Stmt]) -> Option<Vec<Option<String>>> {
    let listed = |elts: &[Expr]| elts.iter().map(dotted).collect();
    match the_return(body)? {
        Expr::List(l) => Some(listed(&l.elts)),
        Expr::Tuple(t) => Some(listed(&t.elts)),
        v => Some(vec![dotted(v)]),
    }
}

/// The value of a function body's only `return`, when it has exactly one
/// and it has a value (nested functions and classes not searched).
fn the_return(body: &[Stmt]) -> Option<&Expr> {
    struct Returns<'a>(Vec<&'a Expr>, bool);
    impl<'a> Visitor<'a> for Returns<'a> {
        fn visit_stmt(&mut self, stmt: &'a Stmt) {
            match stmt {
                Stmt::FunctionDef(_) | Stmt::ClassDef(_) => {}
                Stmt::Return(r) => match &r.value {
                    Some(v) => self.0.push(v),
                    None => self.1 = true,
                },
                _ => walk_stmt(self, stmt),
            }
        }
    }
    let mut returns = Returns(Vec::new(), false);
    for stmt in body {
        returns.visit_stmt(stmt);
    }
    match (returns.0.as_slice(), returns.1) {
        ([v], false) => Some(v),
        _ => None,
    }
}

/// What a function's one `return` lists first, by position: the list of
/// `return [opt_g, opt_d], [sched_g, sched_d]`, or of `return [opt_g,
/// opt_d]` (Lightning's `configure_optimizers`, as `self.optimizers()`
/// gives it back).
fn listed_first_return(body: &[Stmt]) -> Option<Vec<Option<String>>> {
    let list = match the_return(body)? {
        Expr::Tuple(t) if t.elts.len() == 2 && matches!(&t.elts[0], Expr::List(_)) => {
            match &t.elts[0] {
                Expr::List(l) => &l.elts,
                _ => return None,
            }
        }
        // `return opt_g, opt_d`: a tuple of optimizers.
        Expr::Tuple(t) if t.elts.iter().all(|e| dotted(e).is_some()) => &t.elts,
        Expr::List(l) => &l.elts,
        _ => return None,
    };
    Some(list.iter().map(dotted).collect())
}

/// Whether a `requires_grad` call surely turns gradients on: a literal
/// `True` and no other literal (`requires_grad_()` defaults to `True`).
fn unfreezes(call: &ast::ExprCall) -> bool {
    let literal = |e: &Expr| match e {
        Expr::BooleanLiteral(b) => Some(b.value),
        _ => None,
    };
    let args = &call.arguments;
    let flags: Vec<Option<bool>> = args
        .args
        .iter()
        .map(literal)
        .chain(
            args.keywords
                .iter()
                .filter(|k| {
                    k.arg
                        .as_ref()
                        .is_some_and(|a| a.as_str().contains("requires_grad"))
                })
                .map(|k| literal(&k.value)),
        )
        .collect();
    let method =
        matches!(call.func.as_ref(), Expr::Attribute(a) if a.attr.id.as_str() == "requires_grad_");
    if method && args.args.is_empty() && args.keywords.is_empty() {
        return true;
    }
    flags.contains(&Some(true)) && !flags.contains(&Some(false))
}

/// Whether a loop's iterable names modules or their parameters
/// (`net_d.parameters()`, `[net_d, net_g]`), rather than a list of tensors.
fn iter_has_modules(iter: &Expr) -> bool {
    match iter {
        Expr::Call(c) => match c.func.as_ref() {
            Expr::Attribute(a) => matches!(
                a.attr.id.as_str(),
                "parameters" | "named_parameters" | "modules" | "children" | "named_modules"
            ),
            _ => false,
        },
        Expr::List(_) | Expr::Tuple(_) => true,
        _ => false,
    }
}

/// The longest dotted names in `expr` (`self.net_d`, not `self`), calls'
/// callees included (`net_d.parameters`).
fn collect_dotted(expr: &Expr, out: &mut Vec<String>) {
    struct Names<'o>(&'o mut Vec<String>);
    impl<'a> Visitor<'a> for Names<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Some(d) = dotted(expr) {
                self.0.push(d);
                return;
            }
            walk_expr(self, expr);
        }
    }
    Names(out).visit_expr(expr);
}

/// What an optimizer constructor's parameters are: the owners of the
/// `X.parameters()` calls in its first argument (or `params=`), and whether
/// they are all it takes; a list variable (`params`) is what `lists` says
/// it holds.
fn built_over(value: &Expr, lists: &HashMap<String, Built>) -> Built {
    let Expr::Call(call) = value else {
        return Built::unknown();
    };
    let Some(params) = call
        .arguments
        .args
        .first()
        .or_else(|| call.arguments.find_keyword("params").map(|k| &k.value))
    else {
        return Built::unknown();
    };
    parameters_in(params, lists)
}

/// The parameters an expression lists: `X.parameters()` (its owner),
/// `list(...)`, `chain(...)`, `+`, list and dict displays, comprehensions
/// over them (a subset), names of `lists`.
fn parameters_in(params: &Expr, lists: &HashMap<String, Built>) -> Built {
    struct Owners<'l> {
        models: Vec<String>,
        parts: Vec<String>,
        tensors: Vec<String>,
        exact: bool,
        closed: bool,
        in_comprehension: usize,
        in_display: usize,
        lists: &'l HashMap<String, Built>,
    }
    impl<'a> Visitor<'a> for Owners<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            match expr {
                Expr::Call(c) => {
                    if let Expr::Attribute(a) = c.func.as_ref() {
                        if matches!(a.attr.id.as_str(), "parameters" | "named_parameters") {
                            match dotted(&a.value) {
                                Some(m) if self.in_comprehension == 0 => {
                                    self.parts.push(m.clone());
                                    self.models.push(m);
                                }
                                Some(m) => {
                                    self.parts.push(m);
                                    self.exact = false;
                                }
                                None => {
                                    self.exact = false;
                                    self.closed = false;
                                }
                            }
                            return;
                        }
                    }
                    // `list(...)`, `itertools.chain(...)`, `filter(f, ...)`.
                    let known = dotted(&c.func).is_some_and(|f| {
                        matches!(
                            f.rsplit('.').next().unwrap_or(""),
                            "list" | "tuple" | "chain" | "filter" | "set"
                        )
                    });
                    if !known {
                        self.exact = false;
                        self.closed = false;
                    }
                    for a in c.arguments.args.iter() {
                        self.visit_expr(a);
                    }
                }
                Expr::Lambda(_) => {}
                // `[p for p in net.parameters()]`: the whole list.
                Expr::ListComp(ast::ExprListComp {
                    elt, generators, ..
                }) if matches!(generators.as_slice(), [g] if g.ifs.is_empty()
                    && !g.is_async
                    && matches!((elt.as_ref(), &g.target), (Expr::Name(e), Expr::Name(t)) if e.id == t.id)) =>
                {
                    self.visit_expr(&generators[0].iter);
                }
                // A subset of what its loops run over (the element and
                // the filters pick among them).
                Expr::ListComp(ast::ExprListComp { generators, .. })
                | Expr::Generator(ast::ExprGenerator { generators, .. })
                | Expr::SetComp(ast::ExprSetComp { generators, .. }) => {
                    self.exact = false;
                    self.in_comprehension += 1;
                    for g in generators {
                        self.visit_expr(&g.iter);
                    }
                    self.in_comprehension -= 1;
                }
                Expr::Dict(d) => {
                    for item in &d.items {
                        let params = matches!(&item.key, Some(Expr::StringLiteral(s)) if s.value.to_str() == "params");
                        if params {
                            self.visit_expr(&item.value);
                        }
                    }
                }
                Expr::Name(n) => match self.lists.get(n.id.as_str()) {
                    Some(b) => {
                        if self.in_comprehension == 0 {
                            self.models.extend(b.models.iter().cloned());
                        }
                        self.parts.extend(b.parts.iter().cloned());
                        self.tensors.extend(b.tensors.iter().cloned());
                        self.exact &= b.exact;
                        self.closed &= b.closed;
                    }
                    None if self.in_display > 0 && self.in_comprehension == 0 => {
                        self.tensor(n.id.to_string())
                    }
                    None => {
                        self.exact = false;
                        self.closed = false;
                    }
                },
                // A tensor listed by name (`[self.log_alpha]`).
                Expr::Attribute(_) if self.in_display > 0 && self.in_comprehension == 0 => {
                    match dotted(expr) {
                        Some(d) => self.tensor(d),
                        None => {
                            self.exact = false;
                            self.closed = false;
                        }
                    }
                }
                Expr::List(_) | Expr::Tuple(_) | Expr::Set(_) => {
                    self.in_display += 1;
                    walk_expr(self, expr);
                    self.in_display -= 1;
                }
                Expr::BinOp(_) => walk_expr(self, expr),
                _ => {
                    self.exact = false;
                    self.closed = false;
                }
            }
        }
    }
    impl Owners<'_> {
        /// A tensor taken by name: what the optimizer holds, as a model.
        fn tensor(&mut self, name: String) {
            self.models.push(name.clone());
            self.parts.push(name.clone());
            self.tensors.push(name);
        }
    }
    let mut owners = Owners {
        models: Vec::new(),
        parts: Vec::new(),
        tensors: Vec::new(),
        exact: true,
        closed: true,
        in_comprehension: 0,
        in_display: 0,
        lists,
    };
    owners.visit_expr(params);
    owners.tensors.sort();
    owners.tensors.dedup();
    owners.models.sort();
    owners.models.dedup();
    owners.parts.sort();
    owners.parts.dedup();
    Built {
        exact: owners.exact && !owners.models.is_empty(),
        closed: owners.closed && !owners.parts.is_empty(),
        models: owners.models,
        parts: owners.parts,
        tensors: owners.tensors,
    }
}

/// The optimizers a class builds over its own submodules, as attributes:
/// `self.opt_d = Adam(self.discriminator.parameters())` in any method is
/// `opt_d`, built over `self.discriminator`. An instance `net` of the class
/// then holds `net.opt_d`, built over `net.discriminator`.
pub(crate) fn class_optimizers(class: &ast::StmtClassDef) -> Vec<(String, Built)> {
    let mut out = Vec::new();
    for stmt in &class.body {
        let Stmt::FunctionDef(f) = stmt else { continue };
        for s in &f.body {
            let Stmt::Assign(a) = s else { continue };
            if !is_optimizer_constructor(&a.value) {
                continue;
            }
            let built = built_over(&a.value, &HashMap::default());
            let own = |m: &String| m == "self" || m.starts_with("self.");
            if built.models.is_empty() || !built.models.iter().chain(&built.parts).all(own) {
                continue;
            }
            for target in &a.targets {
                let attribute = dotted(target)
                    .and_then(|t| t.strip_prefix("self.").map(str::to_string))
                    .filter(|a| !a.contains('.'));
                if let Some(attribute) = attribute {
                    out.push((attribute, built.clone()));
                }
            }
        }
    }
    out
}

/// The optimizers instances of classes hold (`net = Net(...)`, whose class
/// builds `self.opt_d` over `self.discriminator`: `net.opt_d` over
/// `net.discriminator`), for the file's classes and those it imports.
pub(super) fn instance_optimizers(module: &[Stmt], imports: &Imports) -> Vec<(String, Built)> {
    let own: HashMap<&str, Vec<(String, Built)>> = module
        .iter()
        .filter_map(|s| match s {
            Stmt::ClassDef(c) => Some((c.name.id.as_str(), class_optimizers(c))),
            _ => None,
        })
        .filter(|(_, built)| !built.is_empty())
        .collect();
    if own.is_empty() && imports.optimizer_models.is_empty() {
        return Vec::new();
    }
    struct Finder<'a> {
        own: &'a HashMap<&'a str, Vec<(String, Built)>>,
        imports: &'a Imports,
        out: Vec<(String, Built)>,
    }
    impl<'a> Visitor<'a> for Finder<'_> {
        fn visit_stmt(&mut self, stmt: &'a Stmt) {
            if let Stmt::Assign(a) = stmt {
                if let Expr::Call(call) = a.value.as_ref() {
                    let callee = dotted(&call.func).unwrap_or_default();
                    let built = self
                        .imports
                        .optimizer_models
                        .get(&callee)
                        .or_else(|| self.own.get(callee.as_str()));
                    for (target, (attribute, b)) in a
                        .targets
                        .iter()
                        .filter_map(dotted)
                        .flat_map(|t| built.into_iter().flatten().map(move |x| (t.clone(), x)))
                    {
                        let moved = |m: &String| match m.strip_prefix("self.") {
                            Some(part) => format!("{target}.{part}"),
                            None => target.clone(),
                        };
                        self.out.push((
                            format!("{target}.{attribute}"),
                            Built {
                                models: b.models.iter().map(moved).collect(),
                                parts: b.parts.iter().map(moved).collect(),
                                tensors: b.tensors.iter().map(moved).collect(),
                                ..b.clone()
                            },
                        ));
                    }
                }
            }
            walk_stmt(self, stmt);
        }
    }
    let mut finder = Finder {
        own: &own,
        imports,
        out: Vec::new(),
    };
    for stmt in module {
        finder.visit_stmt(stmt);
    }
    finder.out
}

#[cfg(test)]
mod tests {
    use crate::ir::Reach;

    fn reach(source: &str) -> Reach {
        let parsed = super::super::parse(source).unwrap();
        super::reach(
            source,
            &parsed.syntax().body,
            &crate::ir::HandedIn::default(),
            &[],
        )
    }

    /// The calls each pass of `source` reaches (with two optimizers built
    /// first: passes are read only then).
    fn calls(source: &str) -> Vec<Vec<String>> {
        let two = "opt_a = Adam(a.parameters())\nopt_b = Adam(b.parameters())\n";
        reach(&format!("{two}{source}"))
            .passes
            .into_iter()
            .map(|p| p.calls)
            .collect()
    }

    #[test]
    fn a_loss_reaches_the_models_it_is_computed_through() {
        let src = "for x in data:\n    fake = net_g(z)\n    out = net_d(fake.detach())\n    g_loss = crit(net_d(fake), real)\n    g_loss.backward()\n";
        let c = &calls(src)[0];
        assert!(c.contains(&"net_d".to_string()) && c.contains(&"net_g".to_string()));
        // Detached, under no_grad, rebound in a branch, or read before its
        // assignment in the loop: not certain.
        for src in [
            "for x in data:\n    out = net_d(x).detach()\n    out.mean().backward()\n",
            "for x in data:\n    with torch.no_grad():\n        out = net_d(x)\n    loss = out.mean()\n    loss.backward()\n",
            "for x in data:\n    out = net_d(x)\n    if c:\n        out = f(x)\n    out.mean().backward()\n",
            "for x in data:\n    if i:\n        loss.backward()\n    loss = net_d(x).mean()\n",
            "for x in data:\n    loss = net_d(x).mean() if c else 0\n    loss.backward()\n",
        ] {
            assert!(!calls(src)[0].contains(&"net_d".to_string()), "{src}");
        }
    }

    #[test]
    fn augmented_and_attribute_losses_are_followed() {
        let src = "def f(self):\n    loss = 0\n    loss += crit(self.net_d(x))\n    self.loss = loss\n    self.loss.backward()\n";
        assert!(calls(src)[0].contains(&"self.net_d".to_string()));
        let src =
            "out = model(x)\nout.loss.backward()\naccelerator.backward(crit(net_d.forward(x)))\n";
        let c = calls(src);
        assert!(c[0].contains(&"model".to_string()));
        assert!(c[1].contains(&"net_d".to_string()));
    }

    #[test]
    fn optimizers_and_freezes() {
        let r = reach("opt_d = Adam(net_d.parameters(), lr=1)\nopt_g = Adam(list(g.parameters()) + extra)\nopt = Adam([{'params': a.parameters()}, {'params': b.parameters(), 'lr': 1}])\n");
        assert_eq!(r.models_of("opt_d"), vec!["net_d".to_string()]);
        assert!(r.only_other_models("opt_d", "net_g"));
        assert!(!r.only_other_models("opt_g", "net_d"));
        assert!(r.only_other_models("opt", "net_d"));
        assert!(!r.may_freeze("net_d"));
        let frozen = |src: &str| reach(src).may_freeze("net_d");
        assert!(frozen(
            "for p in net_d.parameters():\n    p.requires_grad = False\n"
        ));
        assert!(frozen("net_d.requires_grad_(False)\n"));
        assert!(frozen("self.set_requires_grad([self.net_d], False)\n"));
        assert!(frozen("for p in params:\n    p.requires_grad = False\n"));
        assert!(frozen("self.toggle_optimizer(opt)\n"));
        assert!(!frozen(
            "for p in net_g.parameters():\n    p.requires_grad = False\n"
        ));
    }
}
