//! Python (PyTorch) to the model, with ruff's parser.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use ruff_python_ast::visitor::{walk_expr, Visitor};
use ruff_python_ast::{self as ast, Expr, Operator, Stmt};
use ruff_python_parser::Parsed;
use ruff_text_size::Ranged;

use super::conditions::{classify, counting_iter, optimizer_exists};
use super::{looks_like_optimizer, SyntaxError, OPTIMIZER_TYPES};
use crate::ir::{Counter, Event, Function, Inherited, Node, Program, Reset, Span, Tested, Updater};

/// Deeper statement nesting than this is not analysed (no stack overflow on
/// generated code).
const MAX_DEPTH: usize = 100;

/// Parses and lowers a Python file.
pub fn lower(source: &str) -> Result<Program, SyntaxError> {
    let parsed = parse(source)?;
    // Every rule needs a backward pass: a file without one is only checked
    // for syntax.
    if !calls_backward(source) {
        return Ok(Program::default());
    }
    Ok(lower_module(source, parsed.syntax(), &Imports::default()))
}

/// Whether the text has a call of a backward pass (`backward(`, `backward
/// (`), not just the word ("backward compatibility" in a docstring).
///
/// ```
/// use gradlint::frontend::python::calls_backward;
/// assert!(calls_backward("loss.backward()"));
/// assert!(calls_backward("self.manual_backward (loss)"));
/// assert!(!calls_backward("\"\"\"Kept for backward compatibility.\"\"\""));
/// ```
pub fn calls_backward(source: &str) -> bool {
    source.match_indices("backward").any(|(i, w)| {
        source[i + w.len()..]
            .trim_start_matches([' ', '\t'])
            .starts_with('(')
    })
}

/// Parses a Python file.
pub fn parse(source: &str) -> Result<Parsed<ast::ModModule>, SyntaxError> {
    ruff_python_parser::parse_module(source).map_err(|e| SyntaxError {
        message: e.error.to_string(),
        offset: e.location.start().to_usize(),
    })
}

/// Lowers a parsed Python file, with the names it imports from other files
/// of the invocation (none for a file linted alone).
pub fn lower_module(source: &str, module: &ast::ModModule, imports: &Imports) -> Program {
    let mut lowerer = Lowerer {
        source,
        program: Program::default(),
        optimizers: HashSet::default(),
        functions: HashSet::default(),
        classes: HashMap::default(),
        instances: HashMap::default(),
        schedulers: HashSet::default(),
        aliases: HashMap::default(),
        parameter_vars: HashSet::default(),
        param_loop_vars: HashSet::default(),
        grad_aliases: HashMap::default(),
        class: None,
        engine_functions: HashSet::default(),
        named: HashMap::default(),
        imports,
        hf_trainers: HashSet::default(),
        class_defs: HashMap::default(),
        latest_class: HashMap::default(),
        bases: HashMap::default(),
        class_asts: HashMap::default(),
        event_methods: HashSet::default(),
        module_body: &module.body,
        calls: std::cell::OnceCell::new(),
        none_params: HashSet::default(),
        constants: module_constants(&module.body),
        run_lengths: std::cell::RefCell::new(Vec::new()),
    };
    lowerer.program.deepspeed =
        source.contains("deepspeed.initialize(") || source.contains("get_global_grad_norm(");
    lowerer.classes(&module.body, 0);
    lowerer.declarations(&module.body, 0);
    // The definitions pass numbers redefined classes again, in the same order.
    lowerer.class_defs.clear();
    lowerer.definitions(&module.body, 0);
    lowerer.named = named_tests(&module.body);
    let body = lowerer.stmts(&module.body, 0);
    lowerer.program.functions.push(Function {
        name: "<module>".into(),
        body,
        assigned: Vec::new(),
    });
    lowerer.program
}

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
}

/// One imported name or module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    /// `from ..pkg.mod import name as local`.
    From {
        /// Leading dots (0 for an absolute import).
        level: u32,
        /// The module after the dots (may be empty).
        module: String,
        /// The name imported.
        name: String,
        /// The name it is bound to.
        local: String,
    },
    /// `import pkg.mod as local` (`local` is `pkg.mod` without `as`).
    Module {
        /// The module.
        module: String,
        /// The name it is reached by.
        local: String,
    },
}

/// The names a file imports from other files of the invocation, resolved.
#[derive(Debug, Clone, Default)]
pub struct Imports {
    /// Local name (`Trainer`, `t.Trainer`) -> the qualified key of a class
    /// of another file (`3::Trainer`).
    pub classes: HashMap<String, String>,
    /// Qualified class key -> its methods.
    pub methods: HashMap<String, HashSet<String>>,
    /// Local name (`train_step`, `t.train_step`) -> the qualified name of a
    /// function of another file (`3::train_step`).
    pub functions: HashMap<String, String>,
}

impl Imports {
    /// Whether nothing is imported.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.functions.is_empty()
    }
}

/// The names of a class's methods.
fn method_names<C: FromIterator<String>>(class: &ast::StmtClassDef) -> C {
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
/// `.step(`).
fn mentions_gradient_event(text: &str) -> bool {
    text.contains("backward(") || text.contains("zero_grad") || text.contains(".step(")
}

/// `raise NotImplementedError` (or `NotImplementedError(...)`).
fn raises_not_implemented(r: &ast::StmtRaise) -> bool {
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

/// The [`Summary`] of a parsed file.
pub fn summarize(source: &str, module: &ast::ModModule) -> Summary {
    let relevant = |node: &dyn Ranged| {
        let s = span(&node.range());
        source
            .get(s.start..s.end)
            .is_some_and(mentions_gradient_event)
    };
    fn imports(body: &[Stmt], out: &mut Vec<Import>, depth: usize) {
        if depth > 4 {
            return;
        }
        for stmt in body {
            match stmt {
                Stmt::Import(i) => {
                    for alias in &i.names {
                        let module = alias.name.id.to_string();
                        let local = alias
                            .asname
                            .as_ref()
                            .map_or_else(|| module.clone(), |a| a.id.to_string());
                        out.push(Import::Module { module, local });
                    }
                }
                Stmt::ImportFrom(f) => {
                    let module = f
                        .module
                        .as_ref()
                        .map_or_else(String::new, |m| m.id.to_string());
                    for alias in &f.names {
                        let name = alias.name.id.to_string();
                        let local = alias
                            .asname
                            .as_ref()
                            .map_or_else(|| name.clone(), |a| a.id.to_string());
                        out.push(Import::From {
                            level: f.level,
                            module: module.clone(),
                            name,
                            local,
                        });
                    }
                }
                Stmt::FunctionDef(f) => imports(&f.body, out, depth + 1),
                Stmt::ClassDef(_) => {}
                _ => {
                    for b in nested_bodies(stmt) {
                        imports(b, out, depth + 1);
                    }
                }
            }
        }
    }
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
                if relevant(c) || loop_calls_abstract(c) {
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
    imports(&module.body, &mut summary.imports, 0);
    for (i, import) in summary.imports.iter().enumerate() {
        let local = match import {
            Import::From { local, .. } | Import::Module { local, .. } => local,
        };
        summary.bound.entry(local.clone()).or_insert(i);
    }
    summary
}

struct Lowerer<'s> {
    source: &'s str,
    program: Program,
    /// Variables bound to an optimizer constructor.
    optimizers: HashSet<String>,
    /// Functions and methods defined in the file.
    functions: HashSet<String>,
    /// Classes defined in the file -> their methods.
    classes: HashMap<String, HashSet<String>>,
    /// Variables (dotted) bound to an instance of a class of the file.
    instances: HashMap<String, String>,
    /// Variables bound to a learning-rate scheduler.
    schedulers: HashSet<String>,
    /// `opt = self.optimizer`: a name for the same optimizer.
    aliases: HashMap<String, String>,
    /// Loop variables over parameters (`for p in model.parameters()`).
    parameter_vars: HashSet<String>,
    /// Loop variables over a model's parameters (`for p in
    /// model.parameters()`): a manual update of one updates them all.
    param_loop_vars: HashSet<String>,
    /// Local names bound to one tensor's gradient (`grad =
    /// delta.grad.detach()`) -> that tensor; `None` when bound to several.
    grad_aliases: HashMap<String, Option<String>>,
    /// The class whose methods are being lowered.
    class: Option<String>,
    /// Functions given to ignite's `Engine(...)`: run once per batch.
    engine_functions: HashSet<String>,
    /// In the function being lowered, local names bound once to a test
    /// (`do_step = (i + 1) % k == 0`).
    named: HashMap<String, &'s Expr>,
    /// Names imported from other files of the invocation.
    imports: &'s Imports,
    /// Classes deriving from a Hugging Face-style `Trainer`.
    hf_trainers: HashSet<String>,
    /// How many times each class name has been defined so far (in the pass
    /// under way): a class defined again (a notebook export) is another
    /// class, keyed `Name#2`, ...
    class_defs: HashMap<String, usize>,
    /// A class name -> the key of its last definition (what the name means
    /// after the definitions).
    latest_class: HashMap<String, String>,
    /// A class key -> its base classes found in the invocation: keys of
    /// classes of the file (`Trainer`) or of another file (`3::Trainer`).
    bases: HashMap<String, Vec<String>>,
    /// A class key of the file -> its definition.
    class_asts: HashMap<String, &'s ast::StmtClassDef>,
    /// Methods (`Class.method`) of the file's classes whose text has a
    /// gradient event.
    event_methods: HashSet<String>,
    /// The module's statements.
    module_body: &'s [Stmt],
    /// How the file calls each function by name: the arguments given
    /// (computed when a function has a parameter defaulting to `None`).
    calls: std::cell::OnceCell<HashMap<String, Vec<CallShape>>>,
    /// The loop variables of the enclosing `for v in range(n)` /
    /// `enumerate(x)` loops, with the run's length (`n`, `len(x)`).
    run_lengths: std::cell::RefCell<Vec<(String, String)>>,
    /// Names bound once in the whole file, at its top level, to `True` or
    /// `False` (`USE_AMP = False`), and never a parameter's name.
    constants: HashMap<String, bool>,
    /// In the function being lowered, the parameters that are `None` in
    /// every call of the file (`train(net, ..., params, lr)` leaves
    /// `optimizer=None`): `if optimizer is not None:` never runs.
    none_params: HashSet<String>,
}

/// The arguments of one call: whether each positional one is `None`, the
/// keywords given (and whether each is `None`), and whether `*args` or
/// `**kwargs` hide the rest.
#[derive(Debug, Clone, Default)]
struct CallShape {
    positional: Vec<bool>,
    keywords: Vec<(String, bool)>,
    unpacked: bool,
}

/// Every call `name(...)` of a plain name in `body`, by name.
fn call_shapes(body: &[Stmt]) -> HashMap<String, Vec<CallShape>> {
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

impl<'s> Lowerer<'s> {
    /// The key of the next definition of class `name` in the pass under way.
    fn class_key(&mut self, name: &str) -> String {
        let n = self.class_defs.entry(name.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            name.to_string()
        } else {
            format!("{name}#{n}")
        }
    }

    /// Records the classes of the file and their methods.
    fn classes(&mut self, body: &'s [Stmt], depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for stmt in body {
            match stmt {
                Stmt::ClassDef(c) => {
                    // Bases first: `class Foo(Foo)` derives from the
                    // definition before.
                    let bases: Vec<String> = c
                        .bases()
                        .iter()
                        .filter_map(dotted)
                        .filter_map(|b| {
                            let last = b.rsplit('.').next().unwrap_or(&b);
                            self.latest_class
                                .get(last)
                                .or_else(|| self.imports.classes.get(&b))
                                .cloned()
                        })
                        .collect();
                    let key = self.class_key(c.name.id.as_str());
                    if !bases.is_empty() {
                        self.bases.insert(key.clone(), bases);
                    }
                    self.class_asts.insert(key.clone(), c);
                    for stmt in &c.body {
                        if let Stmt::FunctionDef(f) = stmt {
                            let s = span(f);
                            if self
                                .source
                                .get(s.start..s.end)
                                .is_some_and(mentions_gradient_event)
                            {
                                self.event_methods.insert(format!("{key}.{}", f.name.id));
                            }
                        }
                    }
                    self.latest_class.insert(c.name.id.to_string(), key.clone());
                    self.classes.insert(key, method_names(c));
                    let hf = c.bases().iter().any(|b| {
                        dotted(b).is_some_and(|d| {
                            d.rsplit('.').next().is_some_and(|l| l.ends_with("Trainer"))
                        })
                    });
                    if hf {
                        self.hf_trainers
                            .insert(self.latest_class[c.name.id.as_str()].clone());
                    }
                    self.classes(&c.body, depth + 1);
                }
                Stmt::FunctionDef(f) => self.classes(&f.body, depth + 1),
                _ => {
                    for b in nested_bodies(stmt) {
                        self.classes(b, depth + 1);
                    }
                }
            }
        }
    }

    /// Records functions, methods, optimizer, scheduler and instance
    /// variables, aliases and parameter loop variables, anywhere.
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
                    // `w.data = w - lr * w.grad` (an adversarial example's
                    // `delta.data = ... delta.grad.sign()`): `w` is updated by
                    // hand, so `w.grad.zero_()` resets it.
                    // `params = [w, b]`: parameters by name.
                    for target in &a.targets {
                        if dotted(target).is_some_and(|t| t.to_ascii_lowercase().contains("param"))
                        {
                            self.parameter_vars.extend(listed_names(&a.value));
                        }
                    }
                    // Only values that read a gradient, or an alias of one.
                    let reads_grads =
                        self.mentions(a.value.as_ref(), ".grad") || !self.grad_aliases.is_empty();
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
                                if let Some(Some(o)) = self.grad_aliases.get(&name) {
                                    owners.push(o.clone());
                                }
                            }
                            owners.sort();
                            owners.dedup();
                            if let [owner] = owners.as_slice() {
                                self.grad_aliases
                                    .entry(n.id.to_string())
                                    .and_modify(|o| {
                                        if o.as_deref() != Some(owner.as_str()) {
                                            *o = None;
                                        }
                                    })
                                    .or_insert_with(|| Some(owner.clone()));
                            }
                        }
                    }
                    for target in &a.targets {
                        let Some(t) = dotted(target) else { continue };
                        if is_optimizer_constructor(&a.value) {
                            if let Some(model) = parameters_owner(&a.value) {
                                self.program.optimizer_models.push((t.clone(), model));
                            }
                            // `Adam([z], ...)`: the tensors listed are its
                            // parameters (`z.grad.zero_()` resets them).
                            if let Expr::Call(call) = a.value.as_ref() {
                                let listed = call.arguments.args.first().or_else(|| {
                                    call.arguments.find_keyword("params").map(|k| &k.value)
                                });
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
                                self.instances.insert(t.clone(), key.clone());
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
                Stmt::Expr(e) => {
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
                                        .any(|a| grad_owners(a).contains(&w));
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
                            let engine = dotted(&m.value)
                                .is_some_and(|r| r.to_ascii_lowercase().contains("privacy"));
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
                // `w -= lr * w.grad` (or `w.data -= ...`): `w` is a parameter
                // of a hand-written optimizer, so `w.grad.zero_()` resets it.
                Stmt::AugAssign(a) if matches!(a.op, ast::Operator::Sub) => {
                    let owner = data_owner(&a.target);
                    if let Some(w) = owner.and_then(dotted) {
                        if grad_owners(&a.value).contains(&w) {
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

    fn nested_declarations(&mut self, stmt: &Stmt, depth: usize) {
        for body in nested_bodies(stmt) {
            self.declarations(body, depth + 1);
        }
    }

    /// Lowers every function and method, once all names are known.
    /// Methods are named `Class.method`. A function the framework runs once
    /// per batch (Lightning's `training_step` with manual optimization, an
    /// ignite process function) becomes a loop body.
    fn definitions(&mut self, body: &'s [Stmt], depth: usize) {
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
        let none = self.params_none_in_every_call(f);
        let outer_none = std::mem::replace(&mut self.none_params, none);
        let mut lowered = self.stmts(&f.body, depth + 1);
        self.none_params = outer_none;
        self.named = outer_named;
        let mut assigned = Vec::new();
        assigned_names(&f.body, &mut assigned, 0);
        let name = f.name.id.as_str();
        if self.runs_per_batch(f) || self.owns_a_batch(f, &lowered) {
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
        Function {
            name: qualified,
            body: lowered,
            assigned,
        }
    }

    /// A method named like a per-batch update (`step`, `train_step`,
    /// `optimize_parameters`...) that itself runs a backward pass, a step and
    /// a reset (or whose class never resets): it owns one batch's gradient
    /// cycle, whoever calls it.
    fn owns_a_batch(&self, f: &ast::StmtFunctionDef, body: &[Node]) -> bool {
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
        if self.class.is_none() || !NAMES.contains(&f.name.id.as_str()) {
            return false;
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
        // A class that never resets gradients anywhere (no `zero_grad`, no
        // `.grad` touched): its update piles them up whoever calls it.
        let never_resets = || {
            self.class
                .as_ref()
                .and_then(|c| self.class_asts.get(c))
                .is_some_and(|c| {
                    let text = self.text(*c);
                    !text.contains("zero_grad") && !text.contains(".grad")
                })
        };
        seen[0] && seen[1] && (seen[2] || never_resets())
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

    /// The parameters of a plain function (not a method) that default to
    /// `None`, are never assigned in it, and are `None` in every call of the
    /// file (there is at least one, and none unpacks arguments).
    fn params_none_in_every_call(&self, f: &ast::StmtFunctionDef) -> HashSet<String> {
        let mut out = HashSet::default();
        if self.class.is_some() {
            return out;
        }
        let params = &f.parameters;
        let defaults_none = |p: &ast::ParameterWithDefault| {
            matches!(p.default.as_deref(), Some(Expr::NoneLiteral(_)))
        };
        let any_none_default = params
            .posonlyargs
            .iter()
            .chain(&params.args)
            .chain(&params.kwonlyargs)
            .any(defaults_none);
        if !any_none_default {
            return out;
        }
        let calls = self.calls.get_or_init(|| call_shapes(self.module_body));
        let Some(calls) = calls.get(f.name.id.as_str()) else {
            return out;
        };
        if calls.is_empty() || calls.iter().any(|c| c.unpacked) {
            return out;
        }
        let mut assigned = Vec::new();
        assigned_names(&f.body, &mut assigned, 0);
        let positional: Vec<&ast::ParameterWithDefault> =
            params.posonlyargs.iter().chain(&params.args).collect();
        let all = positional
            .iter()
            .enumerate()
            .map(|(i, p)| (Some(i), *p))
            .chain(params.kwonlyargs.iter().map(|p| (None, p)));
        for (index, p) in all {
            let name = p.parameter.name.id.as_str();
            let defaults_none = matches!(p.default.as_deref(), Some(Expr::NoneLiteral(_)));
            if !defaults_none || assigned.iter().any(|a| a == name) {
                continue;
            }
            let none_everywhere = calls.iter().all(|c| {
                let positional_none = match index {
                    Some(i) => c.positional.get(i).copied().unwrap_or(true),
                    None => true,
                };
                let keyword_none = c
                    .keywords
                    .iter()
                    .filter(|(k, _)| k == name)
                    .all(|(_, none)| *none);
                positional_none && keyword_none
            });
            if none_everywhere {
                out.insert(name.to_string());
            }
        }
        out
    }

    /// The value of a test on parameters that are always `None`
    /// (`p is not None`, `p is None`, `not`, `and`, `or`), if known.
    fn constant_test(&self, test: &Expr) -> Option<bool> {
        match test {
            Expr::Compare(c)
                if c.ops.len() == 1
                    && matches!(c.comparators.first(), Some(Expr::NoneLiteral(_))) =>
            {
                let Expr::Name(n) = c.left.as_ref() else {
                    return None;
                };
                if !self.none_params.contains(n.id.as_str()) {
                    return None;
                }
                match c.ops[0] {
                    ast::CmpOp::Is => Some(true),
                    ast::CmpOp::IsNot => Some(false),
                    _ => None,
                }
            }
            Expr::UnaryOp(u) if u.op == ast::UnaryOp::Not => {
                self.constant_test(&u.operand).map(|v| !v)
            }
            Expr::Name(n) => self.constants.get(n.id.as_str()).copied(),
            Expr::BoolOp(b) => {
                let values: Vec<Option<bool>> =
                    b.values.iter().map(|v| self.constant_test(v)).collect();
                match b.op {
                    ast::BoolOp::And if values.contains(&Some(false)) => Some(false),
                    ast::BoolOp::And if values.iter().all(|v| *v == Some(true)) => Some(true),
                    ast::BoolOp::Or if values.contains(&Some(true)) => Some(true),
                    ast::BoolOp::Or if values.iter().all(|v| *v == Some(false)) => Some(false),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// An ignite process function defined in a file that uses ignite: its
    /// parameters are `(engine, batch)` (an `Engine` subclass's static
    /// `train(engine, mini_batch)`, handed to `super().__init__(func)`).
    fn ignite_process_function(&self, f: &ast::StmtFunctionDef) -> bool {
        let params = &f.parameters;
        let positional: Vec<&str> = params
            .posonlyargs
            .iter()
            .chain(&params.args)
            .map(|p| p.parameter.name.id.as_str())
            .collect();
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

    fn is_optimizer(&self, text: &str) -> bool {
        let scheduler =
            text.to_ascii_lowercase().contains("sched") || self.schedulers.contains(text);
        !scheduler && (self.optimizers.contains(text) || looks_like_optimizer(text))
    }

    /// The object an expression names: an alias resolved.
    fn canonical(&self, text: String) -> String {
        self.aliases.get(&text).cloned().unwrap_or(text)
    }

    /// The method a call `receiver.method(...)` runs, when `receiver` is
    /// `self` in a class of the file or an instance of one.
    fn method_of(&self, receiver: Option<&str>, method: &str) -> Option<String> {
        let class = match receiver? {
            "self" => self.class.clone()?,
            r => self.instances.get(r)?.clone(),
        };
        if class.contains("::") {
            // A class of another file: `self` in the method is the receiver.
            let receiver = receiver?;
            return self
                .imports
                .methods
                .get(&class)?
                .contains(method)
                .then(|| format!("{class}.{method}|{receiver}"));
        }
        // On another object than `self`, `self` in the method is that object
        // (two instances of one wrapper class are two optimizers).
        let suffix = match receiver {
            Some("self") | None => String::new(),
            Some(r) => format!("|{r}"),
        };
        // An inherited method has a copy of its own in the class (see
        // `inherited`), where `self.m()` runs the class's override of `m`.
        self.method_owner(&class, method)
            .map(|_| format!("{class}.{method}{suffix}"))
    }

    /// `class` and its bases found in the invocation, depth first (at most
    /// 8, each once).
    fn lineage(&self, class: &str) -> Vec<String> {
        fn walk(l: &Lowerer<'_>, class: &str, out: &mut Vec<String>) {
            if out.len() > 8 || out.iter().any(|c| c == class) {
                return;
            }
            out.push(class.to_string());
            for b in l.bases.get(class).into_iter().flatten() {
                walk(l, b, out);
            }
        }
        let mut out = Vec::new();
        walk(self, class, &mut out);
        out
    }

    /// The methods a class defines itself (of this file or another).
    fn own_methods(&self, class: &str) -> Option<&HashSet<String>> {
        if class.contains("::") {
            self.imports.methods.get(class)
        } else {
            self.classes.get(class)
        }
    }

    /// The class that defines `method` for instances of `class`: the class
    /// itself or the first of its bases (depth first) that does.
    fn method_owner(&self, class: &str, method: &str) -> Option<String> {
        // Most classes define what is called on them and have no known base.
        if self.own_methods(class).is_some_and(|m| m.contains(method)) {
            return Some(class.to_string());
        }
        if !self.bases.contains_key(class) {
            return None;
        }
        self.lineage(class)
            .into_iter()
            .find(|c| self.own_methods(c).is_some_and(|m| m.contains(method)))
    }

    /// The methods a class of the file inherits (not overriding them), with
    /// the class that defines each.
    fn inherited(&self, class: &str) -> Vec<(String, String)> {
        let lineage = self.lineage(class);
        let mut names: Vec<&String> = lineage[1..]
            .iter()
            .flat_map(|b| self.own_methods(b).into_iter().flatten())
            .collect();
        names.sort();
        names.dedup();
        let own = self.own_methods(class);
        names
            .into_iter()
            .filter(|m| !own.is_some_and(|o| o.contains(*m)))
            .filter_map(|m| Some((self.method_owner(class, m)?, m.clone())))
            .collect()
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
                // `q = torch.tensor(..., requires_grad=True)`: a new leaf,
                // with no gradient yet.
                if let [target] = a.targets.as_slice() {
                    if let Some(t) =
                        dotted(target).filter(|_| self.mentions(a.value.as_ref(), "requires_grad"))
                    {
                        out.push(Node::Event(Event::Reset(Reset::NewTensor(t)), span(stmt)));
                    }
                }
                // `skip = True`: a flag later tests read.
                if let (Expr::BooleanLiteral(b), [Expr::Name(n)]) =
                    (a.value.as_ref(), a.targets.as_slice())
                {
                    out.push(Node::Set(n.id.to_string(), b.value));
                }
                for target in &a.targets {
                    self.assignment(target, &a.value, stmt, out);
                    // A new optimizer over new tensors starts with no gradient
                    // history; one over a model's parameters clears nothing.
                    if let (Some(t), true) = (dotted(target), is_optimizer_constructor(&a.value)) {
                        let reset = match parameters_owner(&a.value) {
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
            Stmt::AnnAssign(a) => {
                if let Some(v) = &a.value {
                    self.expr(v, out);
                    self.assignment(&a.target, v, stmt, out);
                }
            }
            Stmt::AugAssign(a) => {
                self.expr(&a.value, out);
                let reads_own_grad = || {
                    data_owner(&a.target)
                        .and_then(dotted)
                        .is_some_and(|w| self.reads_grad_of(&a.value, &w))
                };
                if a.op == Operator::Sub
                    && (mentions_grad(&a.value) || reads_own_grad())
                    && !is_grad_attribute(&a.target)
                {
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
            Stmt::For(f) => {
                self.expr(&f.iter, out);
                let mut counters = Vec::new();
                let mut pushed_run = false;
                if let Expr::Call(call) = f.iter.as_ref() {
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
                            counters.push(Counter { name, start });
                        }
                    }
                }
                // Whatever the loop binds moves on each iteration
                // (`step.number` of a step object).
                let mut targets = Vec::new();
                target_names(&f.target, &mut targets);
                for name in targets {
                    if !counters.iter().any(|c| c.name == name) {
                        counters.push(Counter { name, start: None });
                    }
                }
                self.looped(Vec::new(), counters, &f.body, &f.orelse, stmt, depth, out);
                if pushed_run {
                    self.run_lengths.borrow_mut().pop();
                }
            }
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
            Stmt::If(i) => {
                self.expr(&i.test, out);
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
                let mut branches = vec![self.stmts(&i.body, depth + 1)];
                let mut tests = vec![classify(self.source, &i.test, &named, &run_length)];
                let mut exhaustive = false;
                for clause in &i.elif_else_clauses {
                    if let Some(test) = &clause.test {
                        // An elif's test runs only when the branches above did not.
                        let mut branch = Vec::new();
                        self.expr(test, &mut branch);
                        branch.extend(self.stmts(&clause.body, depth + 1));
                        branches.push(branch);
                        tests.push(classify(self.source, test, &named, &run_length));
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
                let branches: Vec<Vec<Node>> = m
                    .cases
                    .iter()
                    .map(|c| self.stmts(&c.body, depth + 1))
                    .collect();
                out.push(Node::If {
                    tests: vec![Tested::default(); branches.len()],
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
        head.extend(self.stmts(body, depth + 1));
        let mut assigned = Vec::new();
        assigned_names(body, &mut assigned, 0);
        if let Stmt::For(f) = stmt {
            target_names(&f.target, &mut assigned);
        }
        incremented(body, &mut counters, 0);
        // `with accelerator.accumulate(...)` in the body counts micro-steps:
        // this loop advances accelerate's window.
        if contains_accumulate(&head) {
            // A new run of the loop starts a new window (accelerate closes
            // one at the end of a dataloader).
            counters.push(Counter {
                name: crate::ir::ACCELERATE_COUNTER.into(),
                start: Some(0),
            });
        }
        out.push(Node::Loop {
            body: head,
            span: span(stmt),
            assigned,
            counters,
        });
        out.extend(self.stmts(orelse, depth + 1));
    }

    /// Whether `x.grad` belongs to a parameter: `x` iterates over parameters,
    /// is an attribute path (`model.fc.weight`), or is named like one.
    /// Input gradients (`images.grad`, `delta.grad`) are not the optimizer's.
    fn is_parameter(&self, owner: &Expr) -> bool {
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

    /// `p.grad = None` resets; `p.data = p.data - lr * p.grad` updates.
    fn assignment(&self, target: &Expr, value: &Expr, stmt: &Stmt, out: &mut Vec<Node>) {
        if let Expr::Attribute(a) = target {
            let attr = a.attr.id.as_str();
            // `p.grad = None` clears; `p.grad = g` replaces what backward
            // passes left (a gradient summed or corrected by hand): for the
            // analysis, a reset too.
            if attr == "grad" {
                if let Some(reset) = self.grad_reset(&a.value) {
                    out.push(Node::Event(reset, span(stmt)));
                }
            } else if attr == "data" && !is_grad_attribute(target) && mentions_grad(value) {
                let updater = self.manual_updater(&a.value, value);
                out.push(Node::Event(Event::Step(updater), span(stmt)));
            }
        } else if let Some(w) = updated_tensor(target) {
            // `x[:] = x + lr * x.grad.sign()`, `delta.data[i] = ... grad ...`.
            if self.reads_grad_of(value, &w) {
                let updater = self.manual_updater_of(w);
                out.push(Node::Event(Event::Step(updater), span(stmt)));
            }
        }
    }

    /// Whether `value` reads `owner`'s gradient, directly or through a local
    /// name bound to it.
    fn reads_grad_of(&self, value: &Expr, owner: &str) -> bool {
        if grad_owners(value).iter().any(|o| o == owner) {
            return true;
        }
        let mut names = Vec::new();
        names_read(value, &mut names);
        names
            .iter()
            .any(|n| matches!(self.grad_aliases.get(n), Some(Some(o)) if o == owner))
    }

    /// The updater of a hand-written update of `target` (`x`, `x.data`)
    /// computed from `value`.
    fn manual_updater(&self, target: &Expr, value: &Expr) -> Updater {
        match data_owner(target).and_then(dotted) {
            Some(w) if self.reads_grad_of(value, &w) => self.manual_updater_of(w),
            // `table[s] -= lr * q.grad`: the gradient of one named tensor
            // applied to something else.
            _ => match grad_owners(value).as_slice() {
                [w] if !w.contains('.') => self.manual_updater_of(w.clone()),
                _ => Updater::Manual,
            },
        }
    }

    /// A tensor updated from its own gradient is its own updater, unless it
    /// is a loop variable over a model's parameters.
    fn manual_updater_of(&self, tensor: String) -> Updater {
        if self.param_loop_vars.contains(&tensor) {
            Updater::Manual
        } else {
            Updater::Tensor(tensor)
        }
    }

    /// The reset of `owner.grad` (`= None`, `.zero_()`), if `owner` is a
    /// parameter: of that tensor when it is named, of parameters when it is
    /// a loop variable over them.
    fn grad_reset(&self, owner: &Expr) -> Option<Event> {
        if !self.is_parameter(owner) {
            return None;
        }
        Some(Event::Reset(match dotted(owner) {
            Some(d) if !self.param_loop_vars.contains(&d) => Reset::Tensor(d),
            _ => Reset::Parameters,
        }))
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
                        // A privacy engine's step consumes the passes.
                        let private = match &event {
                            Event::Step(Updater::Optimizer(o)) => {
                                self.lowerer.program.private.contains(o).then(|| o.clone())
                            }
                            _ => None,
                        };
                        self.out.push(Node::Event(event, span(call)));
                        if let Some(o) = private {
                            let reset = Event::Reset(Reset::Optimizer(o));
                            self.out.push(Node::Event(reset, span(call)));
                        }
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
        // `model(x)` on an instance of a class whose `forward` has gradient
        // events (a model that resets its own gradients before the pass).
        if let Some(f) = dotted(&call.func).filter(|f| self.instances.contains_key(f)) {
            let run = ["forward", "__call__"].iter().find_map(|m| {
                let class = &self.instances[&f];
                let owner = self.method_owner(class, m)?;
                (owner.contains("::") || self.event_methods.contains(&format!("{owner}.{m}")))
                    .then(|| self.method_of(Some(&f), m))?
            });
            if run.is_some() {
                return run.map(Event::Call);
            }
        }
        match call.func.as_ref() {
            Expr::Attribute(a) => {
                let method = a.attr.id.as_str();
                let receiver = dotted(&a.value).or_else(|| unwrapped_optimizer(&a.value));
                let receiver_text = || {
                    receiver
                        .clone()
                        .unwrap_or_else(|| self.text(a.value.as_ref()))
                };
                let imported = receiver
                    .as_ref()
                    .and_then(|r| self.imports.functions.get(&format!("{r}.{method}")));
                match method {
                    _ if imported.is_some() => imported.cloned().map(Event::Call),
                    _ if self.method_of(receiver.as_deref(), method).is_some() => {
                        self.method_of(receiver.as_deref(), method).map(Event::Call)
                    }
                    "backward" | "manual_backward" => Some(Event::Backward),
                    "zero_grad" => {
                        let r = self.canonical(receiver_text());
                        Some(Event::Reset(if self.is_optimizer(&r) {
                            Reset::Optimizer(r)
                        } else {
                            Reset::Model(r)
                        }))
                    }
                    "zero_grads" if !self.functions.contains(method) => {
                        Some(Event::Reset(Reset::Parameters))
                    }
                    // `p.grad.zero_()`, `p.grad.data.fill_(0)`.
                    "fill_"
                        if is_grad_attribute(&a.value)
                            && args.args.first().is_some_and(|v| {
                                matches!(v, Expr::NumberLiteral(n) if matches!(&n.value, ast::Number::Int(i) if i.as_u8() == Some(0))
                                    || matches!(&n.value, ast::Number::Float(f) if *f == 0.0))
                            }) =>
                    {
                        self.grad_reset(grad_owner(&a.value)?)
                    }
                    "zero_" if is_grad_attribute(&a.value) => self.grad_reset(grad_owner(&a.value)?),
                    "step" => {
                        let r = self.canonical(receiver_text());
                        if self.is_optimizer(&r) {
                            // `opt.step(closure)` (LBFGS) runs its own backward and reset.
                            (args.args.is_empty() && args.keywords.is_empty())
                                .then_some(Event::Step(Updater::Optimizer(r)))
                        } else if r.to_ascii_lowercase().contains("scaler") {
                            if args.find_keyword("closure").is_some() || args.args.len() > 1 {
                                // The closure runs its own backward and reset.
                                return None;
                            }
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
                        if !updates {
                            return None;
                        }
                        let own = data_owner(&a.value).and_then(dotted).filter(|w| {
                            args.args
                                .iter()
                                .chain(args.keywords.iter().map(|k| &k.value))
                                .any(|v| self.reads_grad_of(v, w))
                        });
                        Some(Event::Step(match own {
                            Some(w) => self.manual_updater_of(w),
                            None => Updater::Manual,
                        }))
                    }
                    // `obj.m()` on an unknown object: some class's method `m`,
                    // never a module-level function `m` (`model.train()`).
                    name if self.functions.contains(name) => Some(Event::Call(format!("*.{name}"))),
                    _ => None,
                }
            }
            Expr::Name(n) if self.classes.contains_key(n.id.as_str()) => None,
            // `zero_grads(params)` (pyro) and such helpers clear `.grad`.
            func if dotted(func).is_some_and(|f| {
                let last = f.rsplit('.').next().unwrap_or("");
                matches!(last, "zero_grads" | "zero_grad_") && !self.functions.contains(last)
            }) =>
            {
                Some(Event::Reset(Reset::Parameters))
            }
            // An imported function, even when a method of the file has its
            // name (a bare name never calls a method).
            Expr::Name(n) if self.imports.functions.contains_key(n.id.as_str()) => self
                .imports
                .functions
                .get(n.id.as_str())
                .cloned()
                .map(Event::Call),
            Expr::Name(n) if self.functions.contains(n.id.as_str()) => {
                Some(Event::Call(n.id.to_string()))
            }
            Expr::Name(n) => self
                .imports
                .functions
                .get(n.id.as_str())
                .cloned()
                .map(Event::Call),
            _ => None,
        }
    }

    /// Whether the source text of `node` contains `needle` (no copy).
    fn mentions(&self, node: &impl Ranged, needle: &str) -> bool {
        let s = span(node);
        self.source
            .get(s.start..s.end)
            .is_some_and(|t| t.contains(needle))
    }

    fn text(&self, node: &impl Ranged) -> String {
        let s = span(node);
        self.source.get(s.start..s.end).unwrap_or("").to_string()
    }
}

/// The tensor an assignment writes in place: `x.data` (`x`), `x[...]` and
/// `x.data[...]` (`x`).
fn updated_tensor(target: &Expr) -> Option<String> {
    match target {
        Expr::Attribute(a) if a.attr.id.as_str() == "data" => dotted(&a.value),
        Expr::Subscript(s) => dotted(data_owner(&s.value)?),
        _ => None,
    }
}

/// The number of values `range(n)` (from 0) or `enumerate(x)` yields, as a
/// condition key's text (`n`, `len(x)`).
fn run_length(source: &str, call: &ast::ExprCall) -> Option<String> {
    let Expr::Name(f) = call.func.as_ref() else {
        return None;
    };
    let args = &call.arguments.args;
    let strip = |e: &Expr| super::conditions::key(source, e);
    match f.id.as_str() {
        "range" if args.len() == 1 => Some(strip(&args[0])),
        "enumerate" if !args.is_empty() => Some(format!("len({})", strip(&args[0]))),
        _ => None,
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

/// Names bound once in the whole module, at its top level, to a boolean
/// literal, and never a function's parameter: settings of a script
/// (`USE_AMP = False`).
fn module_constants(body: &[Stmt]) -> HashMap<String, bool> {
    #[derive(Default)]
    struct Stores(HashMap<String, usize>);
    impl<'a> Visitor<'a> for Stores {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Name(n) = expr {
                if n.ctx.is_store() {
                    *self.0.entry(n.id.to_string()).or_default() += 1;
                }
            }
            walk_expr(self, expr);
        }
        fn visit_parameter(&mut self, p: &'a ast::Parameter) {
            // A parameter of that name may shadow it.
            *self.0.entry(p.name.id.to_string()).or_default() += 2;
            ruff_python_ast::visitor::walk_parameter(self, p);
        }
    }
    let mut out = HashMap::default();
    for stmt in body {
        if let Stmt::Assign(a) = stmt {
            if let (Expr::BooleanLiteral(b), [Expr::Name(n)]) =
                (a.value.as_ref(), a.targets.as_slice())
            {
                out.insert(n.id.to_string(), b.value);
            }
        }
    }
    if out.is_empty() {
        return out;
    }
    let mut stores = Stores::default();
    for stmt in body {
        stores.visit_stmt(stmt);
    }
    out.retain(|name, _| stores.0.get(name) == Some(&1));
    out
}

/// The names and attribute paths listed in a list or tuple literal.
fn listed_names(expr: &Expr) -> Vec<String> {
    match expr {
        Expr::List(l) => l.elts.iter().filter_map(dotted).collect(),
        Expr::Tuple(t) => t.elts.iter().filter_map(dotted).collect(),
        _ => Vec::new(),
    }
}

/// The plain names an expression reads.
fn names_read(expr: &Expr, out: &mut Vec<String>) {
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

/// `accelerator.unwrap_optimizer(opt)`: the optimizer `opt` itself.
fn unwrapped_optimizer(expr: &Expr) -> Option<String> {
    let Expr::Call(call) = expr else { return None };
    let Expr::Attribute(f) = call.func.as_ref() else {
        return None;
    };
    if f.attr.id.as_str() != "unwrap_optimizer" {
        return None;
    }
    dotted(call.arguments.args.first()?)
}

/// Local names bound exactly once in `body` (nested blocks included) to
/// a comparison, a `not` or a boolean operation.
fn named_tests(body: &[Stmt]) -> HashMap<String, &Expr> {
    fn walk<'e>(
        body: &'e [Stmt],
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
                        let test = matches!(t, Expr::Name(_))
                            && matches!(
                                a.value.as_ref(),
                                Expr::Compare(_) | Expr::BoolOp(_) | Expr::UnaryOp(_)
                            );
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
                        walk(b, counts, depth + 1);
                    }
                }
            }
        }
    }
    let mut counts = HashMap::default();
    walk(body, &mut counts, 0);
    counts
        .into_iter()
        .filter_map(|(n, (count, e))| (count == 1).then_some((n, e?)))
        .collect()
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

/// The `x` of `x.grad` / `x.grad.data`.
/// `w` of `w` or `w.data`.
fn data_owner(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::Attribute(a) if a.attr.id.as_str() == "data" => Some(&a.value),
        Expr::Name(_) | Expr::Attribute(_) => Some(expr),
        _ => None,
    }
}

/// The dotted owners `x` of every `x.grad` inside `expr`.
fn grad_owners(expr: &Expr) -> Vec<String> {
    struct Finder(Vec<String>);
    impl<'a> Visitor<'a> for Finder {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Attribute(a) = expr {
                if a.attr.id.as_str() == "grad" {
                    if let Some(owner) = dotted(&a.value) {
                        self.0.push(owner);
                    }
                }
            }
            walk_expr(self, expr);
        }
    }
    let mut f = Finder(Vec::new());
    f.visit_expr(expr);
    f.0
}

fn grad_owner(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::Attribute(a) if a.attr.id.as_str() == "grad" => Some(&a.value),
        Expr::Attribute(a) if a.attr.id.as_str() == "data" => grad_owner(&a.value),
        _ => None,
    }
}

/// Names bound by an assignment target.
fn target_names(target: &Expr, out: &mut Vec<String>) {
    match target {
        Expr::Tuple(t) => t.elts.iter().for_each(|e| target_names(e, out)),
        Expr::List(l) => l.elts.iter().for_each(|e| target_names(e, out)),
        Expr::Starred(s) => target_names(&s.value, out),
        e => out.extend(dotted(e)),
    }
}

/// Every name (dotted) assigned in `body`, nested blocks included, nested
/// functions and classes not.
fn assigned_names(body: &[Stmt], out: &mut Vec<String>, depth: usize) {
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
                        out.push(Counter { name, start: None });
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

/// `get_linear_schedule_with_warmup(...)`, `StepLR(...)`, `WarmupScheduler(...)`.
fn is_scheduler_constructor(value: &Expr) -> bool {
    let Expr::Call(call) = value else {
        return false;
    };
    let callee = dotted(&call.func).unwrap_or_default();
    let last = callee.rsplit('.').next().unwrap_or("");
    let lower = callee.to_ascii_lowercase();
    lower.contains("sched") || last.ends_with("LR") || lower.contains("warmup")
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
