//! Functions handed to other functions of the file and called there: a
//! trainer's `self._foreach_batch(loader, self.train_batch)`, whose loop
//! calls `forward_fn(batch)`. The call of such a parameter runs what the
//! file's calls hand it; a parameter handed several (`train_batch` from one
//! caller, `test_batch` from another) runs one of them, the same one in
//! every iteration of a call. Also here: what the file's calls hand to
//! other files' functions (optimizers and their models).

use rustc_hash::FxHashMap as HashMap;

use ruff_python_ast::visitor::{walk_expr, Visitor};
use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_text_size::Ranged;

use super::imports::Imports;
use super::lowerer::Lowerer;
use super::syntax::{dotted, positional_names, span, MAX_DEPTH};
use crate::ir::{Cond, CondClass, Event, HandedOut, Node, Reach, Test, Tested};

/// What an argument hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Handed {
    /// A method of `self` (`self.train_batch`), whichever class `self` is.
    Method(String),
    /// A function of the file's top level (`train_step`).
    Function(String),
}

/// Per definition (where it starts), per parameter, what the file's calls
/// hand it.
pub(super) type HandedTo = HashMap<u32, HashMap<String, Vec<Handed>>>;

/// What the calls of the file hand to the parameters of its functions and
/// methods.
pub(super) fn handed(module_body: &[Stmt]) -> HandedTo {
    let mut defs = Defs::default();
    defs.collect(module_body, false, 0);
    if defs.functions.is_empty() && defs.methods.is_empty() {
        return HandedTo::default();
    }
    let mut calls = Calls {
        defs: &defs,
        out: HandedTo::default(),
    };
    for stmt in module_body {
        calls.visit_stmt(stmt);
    }
    calls.out
}

#[derive(Default)]
struct Defs<'a> {
    /// Top-level functions by name.
    functions: HashMap<&'a str, Vec<&'a ast::StmtFunctionDef>>,
    /// Methods of the file's classes by name.
    methods: HashMap<&'a str, Vec<&'a ast::StmtFunctionDef>>,
}

impl<'a> Defs<'a> {
    fn collect(&mut self, body: &'a [Stmt], in_class: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for stmt in body {
            match stmt {
                Stmt::FunctionDef(f) if in_class => {
                    self.methods.entry(f.name.id.as_str()).or_default().push(f)
                }
                Stmt::FunctionDef(f) if depth == 0 => self
                    .functions
                    .entry(f.name.id.as_str())
                    .or_default()
                    .push(f),
                Stmt::ClassDef(c) => self.collect(&c.body, true, depth + 1),
                _ => {}
            }
        }
    }
}

struct Calls<'d, 'a> {
    defs: &'d Defs<'a>,
    out: HandedTo,
}

impl<'a> Visitor<'a> for Calls<'_, '_> {
    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Expr::Call(call) = expr {
            self.call(call);
        }
        walk_expr(self, expr);
    }
}

impl Calls<'_, '_> {
    fn call(&mut self, call: &ast::ExprCall) {
        let callees = match call.func.as_ref() {
            Expr::Name(n) => self.defs.functions.get(n.id.as_str()),
            Expr::Attribute(a) => self.defs.methods.get(a.attr.id.as_str()),
            _ => None,
        };
        let Some(callees) = callees else { return };
        let args = &call.arguments;
        let handed = |e: &Expr| match e {
            Expr::Attribute(a)
                if matches!(a.value.as_ref(), Expr::Name(s) if s.id.as_str() == "self")
                    && self.defs.methods.contains_key(a.attr.id.as_str()) =>
            {
                Some(Handed::Method(a.attr.id.to_string()))
            }
            Expr::Name(n) if self.defs.functions.contains_key(n.id.as_str()) => {
                Some(Handed::Function(n.id.to_string()))
            }
            _ => None,
        };
        for def in callees {
            let p = &def.parameters;
            let mut positional = positional_names(p);
            if matches!(positional.first(), Some(&("self" | "cls"))) {
                positional.remove(0);
            }
            let start = def.range().start().to_u32();
            let mut bind = |param: &str, h: Handed| {
                let to = self
                    .out
                    .entry(start)
                    .or_default()
                    .entry(param.to_string())
                    .or_default();
                if !to.contains(&h) {
                    to.push(h);
                }
            };
            for (i, a) in args.args.iter().enumerate() {
                if let (Some(param), Some(h)) = (positional.get(i), handed(a)) {
                    bind(param, h);
                }
            }
            for k in args.keywords.iter() {
                let Some(name) = k.arg.as_ref().map(|a| a.id.as_str()) else {
                    continue;
                };
                let known = positional.contains(&name)
                    || p.kwonlyargs
                        .iter()
                        .any(|a| a.parameter.name.id.as_str() == name);
                if let (true, Some(h)) = (known, handed(&k.value)) {
                    bind(name, h);
                }
            }
        }
    }
}

impl Lowerer<'_> {
    /// A call of a parameter of the function being lowered that the file
    /// hands functions to: a call of each (one of them, the same one in
    /// every iteration, when several).
    pub(super) fn handed_call(&self, call: &ast::ExprCall) -> Option<Vec<Node>> {
        let Expr::Name(n) = call.func.as_ref() else {
            return None;
        };
        let handed = self.handed_now.get(n.id.as_str())?;
        let mut targets: Vec<String> = Vec::new();
        for h in handed {
            let target = match h {
                Handed::Method(m) => self.method_of(Some("self"), m),
                Handed::Function(f) if self.functions.contains(f.as_str()) => Some(f.clone()),
                Handed::Function(_) => None,
            };
            if let Some(t) = target.filter(|t| !targets.contains(t)) {
                targets.push(t);
            }
        }
        let at = span(call);
        let event = |t: &String| Node::Event(Event::Call(t.clone()), at);
        match targets.as_slice() {
            [] => None,
            [one] => Some(vec![event(one)]),
            several => {
                // Which one runs is the parameter's value: fixed for the
                // call, like a flag the loop does not assign.
                let tests = several
                    .iter()
                    .map(|t| {
                        let cond = Cond {
                            key: format!("{} is {t}", n.id),
                            class: CondClass::Flag(vec![n.id.to_string()]),
                        };
                        let test = |negated| Test {
                            cond: cond.clone(),
                            negated,
                        };
                        Tested {
                            holds: vec![vec![test(false)]],
                            fails: vec![vec![test(true)]],
                        }
                    })
                    .collect();
                Some(vec![Node::If {
                    branches: several.iter().map(|t| vec![event(t)]).collect(),
                    exhaustive: true,
                    tests,
                    at,
                }])
            }
        }
    }

    /// What the file hands to the parameters of the definition starting at
    /// `start`.
    pub(super) fn handed_to(&self, start: u32) -> HashMap<String, Vec<Handed>> {
        self.handed.get(&start).cloned().unwrap_or_default()
    }
}

/// The file's calls of other files' functions (`imports`) that hand them
/// optimizers whose models `reach` knows, with the models handed too.
pub(super) fn handed_out(module_body: &[Stmt], imports: &Imports, reach: &Reach) -> Vec<HandedOut> {
    if imports.functions.is_empty() || reach.optimizers.is_empty() {
        return Vec::new();
    }
    struct Across<'r> {
        imports: &'r Imports,
        reach: &'r Reach,
        out: Vec<HandedOut>,
    }
    impl<'a> Visitor<'a> for Across<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Call(call) = expr {
                self.call(call);
            }
            walk_expr(self, expr);
        }
    }
    impl Across<'_> {
        fn call(&mut self, call: &ast::ExprCall) {
            let Some(callee) = dotted(&call.func).and_then(|f| self.imports.functions.get(&f))
            else {
                return;
            };
            let args = &call.arguments;
            let positional: Vec<Option<String>> = args.args.iter().map(dotted).collect();
            let keywords: Vec<(String, String)> = args
                .keywords
                .iter()
                .filter_map(|k| Some((k.arg.as_ref()?.id.to_string(), dotted(&k.value)?)))
                .collect();
            let given = positional
                .iter()
                .flatten()
                .chain(keywords.iter().map(|(_, v)| v));
            let mut optimizers = Vec::new();
            for name in given {
                let models = self.reach.models_of(name);
                // A model the caller may freeze is not handed as trainable.
                if models.is_empty() || models.iter().any(|m| self.reach.may_freeze(m)) {
                    continue;
                }
                optimizers.extend(
                    self.reach
                        .optimizers
                        .iter()
                        .filter(|(o, _)| o == name)
                        .cloned(),
                );
            }
            if optimizers.is_empty() {
                return;
            }
            self.out.push(HandedOut {
                callee: callee.clone(),
                positional,
                keywords,
                optimizers,
            });
        }
    }
    let mut across = Across {
        imports,
        reach,
        out: Vec::new(),
    };
    for stmt in module_body {
        across.visit_stmt(stmt);
    }
    across.out.dedup();
    across.out
}
