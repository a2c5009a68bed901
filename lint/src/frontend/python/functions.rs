//! Functions and methods lowered one by one, and those the framework runs
//! once per batch (a loop body).

use ruff_python_ast::{self as ast, Stmt};
use ruff_text_size::Ranged;
use rustc_hash::FxHashSet as HashSet;

use super::lowerer::Lowerer;
use super::statements::{named_lengths, named_tests};
use super::syntax::MAX_DEPTH;
use super::syntax::{assigned_names, dotted, nested_bodies, positional_names, settled_names, span};
use super::windows::Runs;
use crate::ir::{Event, Function, Inherited, Node, Reset};

impl<'s> Lowerer<'s> {
    /// Lowers every function and method, once all names are known.
    /// Methods are named `Class.method`. A function the framework runs once
    /// per batch (Lightning's `training_step` with manual optimization, an
    /// ignite process function) becomes a loop body.
    pub(super) fn definitions(&mut self, body: &'s [Stmt], depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for stmt in body {
            match stmt {
                Stmt::FunctionDef(f) => {
                    let function = self.function(f, depth);
                    self.program.functions.push(function);
                    let outer = self.class.take();
                    self.definitions(&f.body, depth + 1);
                    self.class = outer;
                }
                Stmt::ClassDef(c) => {
                    let key = self.class_key(c.name.id.as_str());
                    let outer = self.class.replace(key.clone());
                    self.definitions(&c.body, depth + 1);
                    // Each inherited method again, as the class's own: a
                    // base class's loop calling `self.train_one_step()` runs
                    // the subclass's override.
                    for (owner, method) in self.inherited(&key) {
                        if owner.contains("::") {
                            // Copied once the other file is lowered.
                            self.program.inherited.push(Inherited {
                                class: key.clone(),
                                method,
                                from: owner,
                            });
                            continue;
                        }
                        let def = self.class_asts.get(owner.as_str()).and_then(|a| {
                            a.body.iter().rev().find_map(|s| match s {
                                Stmt::FunctionDef(f) if f.name.id.as_str() == method => Some(f),
                                _ => None,
                            })
                        });
                        if let Some(def) = def {
                            let function = self.function(def, depth + 1);
                            self.program.functions.push(function);
                        }
                    }
                    self.class = outer;
                }
                _ => {
                    for b in nested_bodies(stmt) {
                        self.definitions(b, depth + 1);
                    }
                }
            }
        }
    }

    /// Lowers one function or method (of `self.class`), named
    /// `Class.method` for a method.
    fn function(&mut self, f: &'s ast::StmtFunctionDef, depth: usize) -> Function {
        let outer_named = std::mem::replace(&mut self.named, named_tests(&f.body));
        let outer_lengths = std::mem::replace(&mut self.named_lengths, named_lengths(&f.body));
        let none = self.params_none_in_every_call(f);
        let outer_none = std::mem::replace(&mut self.none_params, none);
        let handed = self.handed_to(f.range().start().to_u32());
        let outer_handed = std::mem::replace(&mut self.handed_now, handed);
        // A method that keeps an equality counter on `self` (`self.accum
        // += 1`, reset when it reaches `k`) runs once per iteration of the
        // loop that calls it: its tests are counter tests of that loop.
        let windows = self.equality_windows(&f.body, Runs::Function);
        self.equality_windows.borrow_mut().push(windows);
        let mut lowered = self.stmts(&f.body, depth + 1);
        self.equality_windows.borrow_mut().pop();
        self.none_params = outer_none;
        self.handed_now = outer_handed;
        self.named = outer_named;
        self.named_lengths = outer_lengths;
        let mut assigned = Vec::new();
        assigned_names(&f.body, &mut assigned, 0);
        // Bound again on every call to what the call hands in: the same
        // on every iteration of a caller's loop.
        let settled = settled_names(f);
        assigned.retain(|a| !settled.contains(a));
        let name = f.name.id.as_str();
        let by_framework = self.runs_per_batch(f);
        // Called on an instance of its class in a loop of the file: once
        // per iteration by evidence, whatever its name.
        let called_in_a_loop = self
            .class
            .as_ref()
            .is_some_and(|c| self.looped_methods.contains(&format!("{c}.{name}")));
        let owned = (!by_framework)
            .then(|| self.owns_a_batch(f, &lowered, called_in_a_loop))
            .flatten();
        if by_framework || owned.is_some() {
            if owned == Some(true) {
                let name = match &self.class {
                    Some(c) => format!("{c}.{name}"),
                    None => name.to_string(),
                };
                self.program.per_batch_by_name.push((span(f), name));
            }
            returns_end_iteration(&mut lowered);
            if self.hf_training_step(f) {
                // The trainer's own reset, between two calls.
                let reset = Reset::Model("model".into());
                lowered.insert(0, Node::Event(Event::Reset(reset), span(&f.name)));
            }
            lowered = vec![Node::Loop {
                body: lowered,
                span: span(f),
                assigned: assigned.clone(),
                counters: Vec::new(),
            }];
        }
        let qualified = match &self.class {
            Some(c) => format!("{c}.{name}"),
            None => name.to_string(),
        };
        // A method's `self` (or `cls`) is not an argument of its calls.
        let mut params = positional_names(&f.parameters);
        if self.class.is_some() && matches!(params.first(), Some(&("self" | "cls"))) {
            params.remove(0);
        }
        let keywords = f
            .parameters
            .kwonlyargs
            .iter()
            .map(|a| a.parameter.name.to_string())
            .collect();
        Function {
            name: qualified,
            body: lowered,
            assigned,
            params: params.into_iter().map(String::from).collect(),
            keywords,
        }
    }

    /// Whether a method runs one batch's gradient cycle, whoever calls it,
    /// and whether that rests on its name: a method that itself runs a
    /// backward pass, a step and a reset, and that a loop of the file calls
    /// on an instance of its class (`Some(false)`, by evidence), or that is
    /// named like a per-batch update (`step`, `train_step`,
    /// `optimize_parameters`...; also when its class never resets:
    /// `Some(true)`, by its name).
    fn owns_a_batch(
        &self,
        f: &ast::StmtFunctionDef,
        body: &[Node],
        called_in_a_loop: bool,
    ) -> Option<bool> {
        const NAMES: [&str; 10] = [
            "step",
            "train_step",
            "training_step",
            "train_batch",
            "train_on_batch",
            "fit_batch",
            "optimize",
            "optimize_parameters",
            "update",
            "learn",
        ];
        let named = NAMES.contains(&f.name.id.as_str());
        if self.class.is_none() || !(called_in_a_loop || named) {
            return None;
        }
        let mut seen = [false; 3];
        fn walk(nodes: &[Node], seen: &mut [bool; 3]) {
            for n in nodes {
                match n {
                    Node::Event(Event::Backward, _) => seen[0] = true,
                    Node::Event(Event::Step(_), _) => seen[1] = true,
                    Node::Event(Event::Reset(r), _)
                        if !matches!(
                            r,
                            Reset::NewOptimizer(_)
                                | Reset::NewModelOptimizer { .. }
                                | Reset::NewTensor(_)
                        ) =>
                    {
                        seen[2] = true
                    }
                    Node::If { branches, .. } => branches.iter().for_each(|b| walk(b, seen)),
                    Node::Accumulate(b) => walk(b, seen),
                    _ => {}
                }
            }
        }
        walk(body, &mut seen);
        if !(seen[0] && seen[1]) {
            return None;
        }
        // Called in a loop, the caller may reset around the call: by
        // evidence only a method that resets itself is a whole iteration.
        if called_in_a_loop && seen[2] {
            return Some(false);
        }
        // A class that never resets gradients anywhere (no `zero_grad`, no
        // `.grad` touched, outside comments: a reset commented out is the
        // bug itself): its update piles them up whoever calls it.
        let never_resets = || {
            self.class
                .as_ref()
                .and_then(|c| self.class_asts.get(c))
                .is_some_and(|c| {
                    let text = self.text(*c);
                    !text.lines().any(|line| {
                        let code = line.split('#').next().unwrap_or("");
                        code.contains("zero_grad") || code.contains(".grad")
                    })
                })
        };
        (named && (seen[2] || never_resets())).then_some(true)
    }

    /// The methods (`Class.method`) that calls inside the loops of `body`
    /// make on a name bound to an instance of a class of the file
    /// (`agent.train(batch)`; not `self`, whose calls are followed as
    /// they are).
    pub(super) fn methods_called_in_loops(&self, body: &[Stmt]) -> HashSet<String> {
        use ruff_python_ast::visitor::{walk_expr, walk_stmt, Visitor};
        struct Calls<'l, 's> {
            lowerer: &'l Lowerer<'s>,
            loops: usize,
            out: HashSet<String>,
        }
        impl<'a> Visitor<'a> for Calls<'_, '_> {
            fn visit_stmt(&mut self, stmt: &'a Stmt) {
                match stmt {
                    Stmt::For(f) => self.looped(&f.iter, &f.body, &f.orelse),
                    Stmt::While(w) => self.looped(&w.test, &w.body, &w.orelse),
                    // A function defined in a loop runs when called.
                    Stmt::FunctionDef(f) => {
                        let outer = std::mem::take(&mut self.loops);
                        f.body.iter().for_each(|s| self.visit_stmt(s));
                        self.loops = outer;
                    }
                    _ => walk_stmt(self, stmt),
                }
            }
            fn visit_expr(&mut self, expr: &'a ast::Expr) {
                if let ast::Expr::Call(c) = expr {
                    if let ast::Expr::Attribute(m) = c.func.as_ref() {
                        let class = dotted(&m.value)
                            .filter(|r| self.loops > 0 && r != "self")
                            .and_then(|r| self.lowerer.instances.get(&r));
                        if let Some(class) = class.filter(|c| !c.contains("::")) {
                            self.out.insert(format!("{class}.{}", m.attr.id.as_str()));
                        }
                    }
                }
                walk_expr(self, expr);
            }
        }
        impl<'a> Calls<'_, '_> {
            /// A loop: its head and `else` once, its body in the loop.
            fn looped(&mut self, head: &'a ast::Expr, body: &'a [Stmt], orelse: &'a [Stmt]) {
                self.visit_expr(head);
                self.loops += 1;
                body.iter().for_each(|s| self.visit_stmt(s));
                self.loops -= 1;
                orelse.iter().for_each(|s| self.visit_stmt(s));
            }
        }
        let mut calls = Calls {
            lowerer: self,
            loops: 0,
            out: HashSet::default(),
        };
        body.iter().for_each(|s| calls.visit_stmt(s));
        calls.out
    }

    /// Lightning's `training_step` that drives its optimizers itself
    /// (`self.optimizers()`, `self.manual_backward`), or a function given
    /// to ignite's `Engine`.
    fn runs_per_batch(&self, f: &ast::StmtFunctionDef) -> bool {
        let name = f.name.id.as_str();
        if self.class.is_none() && self.engine_functions.contains(name) {
            return true;
        }
        if self.ignite_process_function(f) {
            return true;
        }
        if name != "training_step" || self.class.is_none() {
            return false;
        }
        let text = self.text(f);
        text.contains("self.optimizers(")
            || text.contains("manual_backward(")
            || self.hf_training_step(f)
    }

    /// An ignite process function defined in a file that uses ignite: its
    /// parameters are `(engine, batch)` (an `Engine` subclass's static
    /// `train(engine, mini_batch)`, handed to `super().__init__(func)`).
    fn ignite_process_function(&self, f: &ast::StmtFunctionDef) -> bool {
        let positional = positional_names(&f.parameters);
        positional.len() == 2
            && positional[0] == "engine"
            && self.source.contains("ignite")
            && self.text(f).contains("backward")
    }

    /// A Hugging Face `Trainer.training_step` override (a method of a class
    /// deriving from a `...Trainer`, with a backward pass): the trainer's
    /// loop calls it once per batch and clears the model's gradients
    /// (`model.zero_grad()`) around its own optimizer step.
    fn hf_training_step(&self, f: &ast::StmtFunctionDef) -> bool {
        f.name.id.as_str() == "training_step"
            && self
                .class
                .as_ref()
                .is_some_and(|c| self.hf_trainers.contains(c))
            && self.text(f).contains("backward")
    }
}

/// In a function run once per batch, `return` ends the iteration (outside
/// nested loops, where it would also leave them).
fn returns_end_iteration(nodes: &mut [Node]) {
    for node in nodes {
        match node {
            Node::Return => *node = Node::Continue,
            Node::If { branches, .. } => branches.iter_mut().for_each(|b| returns_end_iteration(b)),
            Node::Accumulate(body) => returns_end_iteration(body),
            _ => {}
        }
    }
}
