//! What other files of the invocation may take from a file ([`Summary`]).

use ruff_python_ast::visitor::{walk_expr, Visitor};
use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_text_size::Ranged;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::imports::{import_statements, Import};
use super::syntax::span;

/// What other files of the invocation may import from a file: its
/// top-level classes (with their methods) and functions, and what it
/// imports itself (for re-exports through `__init__.py`).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Top-level classes -> their methods.
    pub classes: HashMap<String, HashSet<String>>,
    /// Top-level functions.
    pub functions: HashSet<String>,
    /// Its import statements, anywhere but in classes.
    pub imports: Vec<Import>,
    /// The classes and functions whose text has a gradient event
    /// (`backward(`, `zero_grad`, `.step(`): the only ones worth following
    /// from another file.
    pub relevant: HashSet<String>,
    /// Local name -> the first of `imports` that binds it.
    pub bound: HashMap<String, usize>,
    /// Top-level classes -> the optimizers they build over their own
    /// submodules (`self.opt_d = Adam(self.discriminator.parameters())`:
    /// `opt_d` over `self.discriminator`).
    pub optimizer_models: HashMap<String, Vec<(String, crate::ir::Built)>>,
}

/// The names of a class's methods.
pub(super) fn method_names<C: FromIterator<String>>(class: &ast::StmtClassDef) -> C {
    class
        .body
        .iter()
        .filter_map(|s| match s {
            Stmt::FunctionDef(f) => Some(f.name.id.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether source text has a gradient event (`backward(`, `zero_grad`,
/// `.step(`, the attribute `.grad`).
pub(crate) fn mentions_gradient_event(text: &str) -> bool {
    text.contains("backward(")
        || text.contains("zero_grad")
        || text.contains(".step(")
        || text
            .match_indices(".grad")
            .any(|(at, _)| ends_grad_attribute(text.as_bytes(), at))
}

/// Whether `.grad` at `at` is the attribute itself, not `.grad_fn` or
/// `.gradient`: a helper that resets (`p.grad.zero_()`, `p.grad = None`) or
/// updates (`p.data.add_(p.grad, ...)`) by hand reads it.
pub(crate) fn ends_grad_attribute(bytes: &[u8], at: usize) -> bool {
    !bytes
        .get(at + ".grad".len())
        .is_some_and(|&c| c == b'_' || c.is_ascii_alphanumeric())
}

/// `raise NotImplementedError` (or `NotImplementedError(...)`).
pub(super) fn raises_not_implemented(r: &ast::StmtRaise) -> bool {
    r.exc.as_deref().is_some_and(|e| {
        let e = match e {
            Expr::Call(c) => c.func.as_ref(),
            e => e,
        };
        matches!(e, Expr::Name(n) if n.id.as_str() == "NotImplementedError")
    })
}

/// Whether a method's body is only a docstring, `pass`, `...` or `raise
/// NotImplementedError`: a method for subclasses to define.
fn is_abstract(f: &ast::StmtFunctionDef) -> bool {
    f.body.iter().all(|s| match s {
        Stmt::Pass(_) => true,
        Stmt::Expr(e) => matches!(
            e.value.as_ref(),
            Expr::StringLiteral(_) | Expr::EllipsisLiteral(_)
        ),
        Stmt::Raise(r) => raises_not_implemented(r),
        _ => false,
    })
}

/// Whether a method of `class` calls, in a loop, one of the class's
/// methods left to subclasses (`self.train_one_step(batch)`): a base
/// class's training loop, worth following for a subclass that defines it.
fn loop_calls_abstract(class: &ast::StmtClassDef) -> bool {
    struct Finder<'c> {
        abstract_methods: Vec<&'c str>,
        in_loop: usize,
        found: bool,
    }
    impl<'a> Visitor<'a> for Finder<'_> {
        fn visit_stmt(&mut self, stmt: &'a Stmt) {
            if self.found {
                return;
            }
            let looping = matches!(stmt, Stmt::For(_) | Stmt::While(_));
            self.in_loop += usize::from(looping);
            ruff_python_ast::visitor::walk_stmt(self, stmt);
            self.in_loop -= usize::from(looping);
        }
        fn visit_expr(&mut self, expr: &'a Expr) {
            if self.in_loop > 0 {
                if let Expr::Call(c) = expr {
                    if let Expr::Attribute(a) = c.func.as_ref() {
                        if matches!(a.value.as_ref(), Expr::Name(n) if n.id.as_str() == "self")
                            && self.abstract_methods.contains(&a.attr.id.as_str())
                        {
                            self.found = true;
                        }
                    }
                }
            }
            walk_expr(self, expr);
        }
    }
    let abstract_methods: Vec<&str> = class
        .body
        .iter()
        .filter_map(|s| match s {
            Stmt::FunctionDef(f) if is_abstract(f) => Some(f.name.id.as_str()),
            _ => None,
        })
        .collect();
    if abstract_methods.is_empty() {
        return false;
    }
    let mut f = Finder {
        abstract_methods,
        in_loop: 0,
        found: false,
    };
    for stmt in &class.body {
        f.visit_stmt(stmt);
    }
    f.found
}

/// A class of torch's optimizer kind (`class BertAdam(Optimizer)`) whose
/// text steps nothing else (no `.step(`: not a wrapper over an inner
/// optimizer) and whose `step` clears no gradient: its `step` applies
/// `.grad` to its parameters as
/// `torch.optim.Adam`'s does, and a call of it is a step, not a function
/// to follow (its in-place updates are the optimizer's own).
pub(crate) fn is_leaf_optimizer(source: &str, class: &ast::StmtClassDef) -> bool {
    let optimizer_base = class.bases().iter().any(|b| {
        super::syntax::dotted(b).is_some_and(|d| d.rsplit('.').next() == Some("Optimizer"))
    });
    let s = span(&class.range());
    let text_of = |r: ruff_text_size::TextRange| {
        let s = span(&r);
        source.get(s.start..s.end).unwrap_or("")
    };
    // Its `step` clears no gradient itself (`p.grad = None` after the
    // update): a step that resets is code to follow.
    let step_resets = class.body.iter().any(|st| match st {
        Stmt::FunctionDef(f) if f.name.id.as_str() == "step" => {
            let text = text_of(f.range());
            [
                ".grad = None",
                ".grad.zero_(",
                ".grad.data.zero_(",
                "zero_grad(",
                ".grad.detach_(",
                ".grad.fill_(",
            ]
            .iter()
            .any(|r| text.contains(r))
        }
        _ => false,
    });
    optimizer_base
        && !step_resets
        && source
            .get(s.start..s.end)
            .is_some_and(|text| !text.contains(".step("))
}

/// The [`Summary`] of a parsed file.
pub fn summarize(source: &str, module: &ast::ModModule) -> Summary {
    let relevant = |node: &dyn Ranged| {
        let s = span(&node.range());
        source
            .get(s.start..s.end)
            .is_some_and(mentions_gradient_event)
    };
    let mut summary = Summary::default();
    // With no gradient event and no abstract method in the file, none of its
    // classes or functions is worth following: only its imports (re-exports)
    // are kept.
    let any = mentions_gradient_event(source)
        || source.contains("NotImplementedError")
        || source.contains("pass")
        || source.contains("...");
    for stmt in module.body.iter().filter(|_| any) {
        match stmt {
            Stmt::ClassDef(c) => {
                summary
                    .classes
                    .insert(c.name.id.to_string(), method_names(c));
                if (relevant(c) || loop_calls_abstract(c)) && !is_leaf_optimizer(source, c) {
                    summary.relevant.insert(c.name.id.to_string());
                }
            }
            Stmt::FunctionDef(f) => {
                summary.functions.insert(f.name.id.to_string());
                if relevant(f) {
                    summary.relevant.insert(f.name.id.to_string());
                }
            }
            _ => {}
        }
    }
    // Read in every file, gradient events or not: a model class that
    // builds its optimizers is often all a file has.
    for stmt in &module.body {
        if let Stmt::ClassDef(c) = stmt {
            let built = super::reach::class_optimizers(c);
            if !built.is_empty() {
                let name = c.name.id.to_string();
                summary
                    .classes
                    .entry(name.clone())
                    .or_insert_with(|| method_names(c));
                summary.optimizer_models.insert(name, built);
            }
        }
    }
    import_statements(&module.body, &mut summary.imports, 0);
    for (i, import) in summary.imports.iter().enumerate() {
        let local = match import {
            Import::From { local, .. } | Import::Module { local, .. } => local,
        };
        summary.bound.entry(local.clone()).or_insert(i);
    }
    summary
}
