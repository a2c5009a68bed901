//! Python (PyTorch) to the model, with ruff's parser.
//!
//! A file is lowered in passes over its statements: its classes
//! (`classes`), what its names stand for (`declarations`), then every
//! function and method (`functions`), whose statements and expressions become
//! the model's nodes and gradient events (`statements`, `expressions`),
//! with the tests whose value the file fixes (`constants`). `syntax` and
//! `gradients` read shapes of the syntax tree. What other files may take
//! from a file is its [`Summary`]; what it takes from them, its [`Imports`].

mod classes;
mod constants;
mod declarations;
mod expressions;
mod functions;
mod gradients;
mod imports;
mod statements;
mod summary;
mod syntax;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_python_parser::Parsed;
use ruff_text_size::Ranged;

pub use imports::{Import, Imports};
pub use summary::{summarize, Summary};

use super::SyntaxError;
use crate::ir::{Function, Program};
use constants::{module_constants, CallShape};
use statements::named_tests;
use syntax::span;

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

/// The state of lowering one file: what its names stand for, gathered by
/// the first passes, and the program built.
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

impl<'s> Lowerer<'s> {
    /// Whether the source text of `node` contains `needle` (no copy).
    fn mentions(&self, node: &impl Ranged, needle: &str) -> bool {
        let s = span(node);
        self.source
            .get(s.start..s.end)
            .is_some_and(|t| t.contains(needle))
    }

    /// The source text of `node`.
    fn text(&self, node: &impl Ranged) -> String {
        let s = span(node);
        self.source.get(s.start..s.end).unwrap_or("").to_string()
    }
}
