//! The state of lowering one file, which every pass reads and the first
//! passes fill in.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_text_size::Ranged;

use super::imports::Imports;
use super::syntax::{span, CallShape};
use super::windows::EqualityWindow;
use crate::ir::Program;

/// The state of lowering one file: what its names stand for, gathered by
/// the first passes, and the program built.
pub(super) struct Lowerer<'s> {
    pub(super) source: &'s str,
    pub(super) program: Program,
    /// Variables bound to an optimizer constructor.
    pub(super) optimizers: HashSet<String>,
    /// Functions and methods defined in the file.
    pub(super) functions: HashSet<String>,
    /// Classes defined in the file -> their methods.
    pub(super) classes: HashMap<String, HashSet<String>>,
    /// Variables (dotted) bound to an instance of a class of the file.
    pub(super) instances: HashMap<String, String>,
    /// Variables bound to a learning-rate scheduler.
    pub(super) schedulers: HashSet<String>,
    /// `opt = self.optimizer`: a name for the same optimizer.
    pub(super) aliases: HashMap<String, String>,
    /// Loop variables over parameters (`for p in model.parameters()`).
    pub(super) parameter_vars: HashSet<String>,
    /// Loop variables over a model's parameters (`for p in
    /// model.parameters()`): a manual update of one updates them all.
    pub(super) param_loop_vars: HashSet<String>,
    /// Local names bound to a tensor's gradient (`grad =
    /// delta.grad.detach()`) -> the tensors whose gradients they are bound
    /// to somewhere in the file (two functions may both use `grad`).
    pub(super) grad_aliases: HashMap<String, Vec<String>>,
    /// The class whose methods are being lowered.
    pub(super) class: Option<String>,
    /// Functions given to ignite's `Engine(...)`: run once per batch.
    pub(super) engine_functions: HashSet<String>,
    /// In the function being lowered, local names bound once to a test
    /// (`do_step = (i + 1) % k == 0`).
    pub(super) named: HashMap<String, &'s Expr>,
    /// In the function being lowered, local names bound once to a length
    /// (`epoch_len = len(loader)`).
    pub(super) named_lengths: HashMap<String, &'s Expr>,
    /// Names imported from other files of the invocation.
    pub(super) imports: &'s Imports,
    /// Classes deriving from a Hugging Face-style `Trainer`.
    pub(super) hf_trainers: HashSet<String>,
    /// How many times each class name has been defined so far (in the pass
    /// under way): a class defined again (a notebook export) is another
    /// class, keyed `Name#2`, ...
    pub(super) class_defs: HashMap<String, usize>,
    /// A class name -> the key of its last definition (what the name means
    /// after the definitions).
    pub(super) latest_class: HashMap<String, String>,
    /// A class key -> its base classes found in the invocation: keys of
    /// classes of the file (`Trainer`) or of another file (`3::Trainer`).
    pub(super) bases: HashMap<String, Vec<String>>,
    /// A class key of the file -> its definition.
    pub(super) class_asts: HashMap<String, &'s ast::StmtClassDef>,
    /// Methods (`Class.method`) of the file's classes whose text has a
    /// gradient event.
    pub(super) event_methods: HashSet<String>,
    /// The module's statements.
    pub(super) module_body: &'s [Stmt],
    /// How the file calls each function by name: the arguments given
    /// (computed when a function has a parameter defaulting to `None`).
    pub(super) calls: std::cell::OnceCell<HashMap<String, Vec<CallShape>>>,
    /// The loop variables of the enclosing `for v in range(n)` /
    /// `enumerate(x)` loops, with the run's length (`n`, `len(x)`).
    pub(super) run_lengths: std::cell::RefCell<Vec<(String, String)>>,
    /// Loops over `range(n)` with `n` a name or attribute (a setting).
    pub(super) settable_runs: std::cell::RefCell<Vec<crate::ir::Span>>,
    /// The names `import torch as X` binds (`T`): calls through them are
    /// torch's functions.
    pub(super) torch_aliases: Vec<String>,
    /// `p.grad = g` statements, `g` not `None` ([`crate::ir::Program::grad_writes`]).
    pub(super) grad_writes: std::cell::RefCell<Vec<crate::ir::Span>>,
    /// Names bound once in the whole file, at its top level, to `True` or
    /// `False` (`USE_AMP = False`), and never a parameter's name.
    pub(super) constants: HashMap<String, bool>,
    /// In the function being lowered, the parameters that are `None` in
    /// every call of the file (`train(net, ..., params, lr)` leaves
    /// `optimizer=None`): `if optimizer is not None:` never runs.
    pub(super) none_params: HashSet<String>,
    /// Loop variables over optimizers (`for opt in self.optims.values()`,
    /// `for opt in [opt_g, opt_d]`) -> what they run over: the optimizers
    /// listed, or `X[*]` for every optimizer held in `X`.
    pub(super) optimizer_loop_vars: std::cell::RefCell<Vec<(String, Vec<String>)>>,
    /// Where the text has `.parameters()`, `.named_parameters()` or
    /// `.zero_grad(` (the offset of the dot): a name followed by one of
    /// them is a model (found once: asked of every opaque call).
    pub(super) model_marks: Vec<usize>,
    /// The equality counters of the loop bodies (and function bodies) being
    /// lowered, innermost last: a test sees only the innermost body's (a
    /// nested loop or function does not run once per iteration of the
    /// outer one).
    pub(super) equality_windows: std::cell::RefCell<Vec<Vec<EqualityWindow>>>,
    /// Optimizer -> the model reach finds it built over through a variable
    /// of parameters (`built_models`).
    pub(super) built_models: HashMap<String, String>,
    /// What the file's calls hand to its functions' parameters
    /// (`handed`).
    pub(super) handed: super::handed::HandedTo,
    /// What is handed to the parameters of the function being lowered.
    pub(super) handed_now: HashMap<String, Vec<super::handed::Handed>>,
    /// Methods (`Class.method`) a loop of the file calls on an instance
    /// of their class (`for batch in loader: agent.train(batch)`): each
    /// call one iteration of that loop.
    pub(super) looped_methods: HashSet<String>,
    /// Where the assignments that step a tensor by its own gradient into a
    /// new tensor start (`adv = x + alpha * x.grad.sign()`, `x` bound again
    /// after it): each an update by hand of that tensor.
    pub(super) attack_steps: HashSet<usize>,
}

impl<'s> Lowerer<'s> {
    /// Whether the source text of `node` contains `needle` (no copy).
    pub(super) fn mentions(&self, node: &impl Ranged, needle: &str) -> bool {
        let s = span(node);
        self.source
            .get(s.start..s.end)
            .is_some_and(|t| t.contains(needle))
    }

    /// The source text of `node`.
    pub(super) fn text(&self, node: &impl Ranged) -> String {
        let s = span(node);
        self.source.get(s.start..s.end).unwrap_or("").to_string()
    }
}
