//! Python (PyTorch) to the model, with ruff's parser.
//!
//! A file is lowered in passes over its statements, which share one state
//! (`lowerer`): its classes (`classes`), what its names stand for
//! (`declarations`), then every function and method (`functions`), whose
//! statements and expressions become the model's nodes and gradient events
//! (`statements`, `expressions`), with the tests whose value the file fixes
//! (`constants`). `syntax` and `gradients` read shapes of the syntax tree.
//! What other files may take from a file is its [`Summary`]; what it takes
//! from them, its [`Imports`].

mod classes;
mod constants;
mod declarations;
mod expressions;
mod functions;
mod gradients;
mod handed;
mod imports;
mod lowerer;
mod reach;
mod statements;
mod summary;
mod syntax;
mod windows;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use ruff_python_ast as ast;
use ruff_python_parser::Parsed;

pub use imports::{Import, Imports};
pub(crate) use summary::ends_grad_attribute;
#[cfg(test)]
pub(crate) use summary::mentions_gradient_event;
pub use summary::{summarize, Summary};

use super::SyntaxError;
use crate::ir::{Function, HandedIn, Program};
use constants::module_constants;
use lowerer::Lowerer;
use statements::named_tests;

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

/// The model each optimizer is built over, where reach knows it through a
/// variable (`actor_parameters = actor.parameters()`, then
/// `Adam(actor_parameters)`) and every optimizer of that name agrees.
fn built_models(reach: &crate::ir::Reach) -> HashMap<String, String> {
    let mut out: HashMap<String, Option<String>> = HashMap::default();
    for (name, built) in &reach.optimizers {
        let first = built.models.first().cloned();
        out.entry(name.clone())
            .and_modify(|m| {
                if *m != first {
                    *m = None;
                }
            })
            .or_insert(first);
    }
    out.into_iter()
        .filter_map(|(name, m)| Some((name, m?)))
        .collect()
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
    lower_module_handed(source, module, imports, &HandedIn::default())
}

/// [`lower_module`], with what other files' calls hand its functions
/// (their [`Program::handed_out`]).
pub fn lower_module_handed(
    source: &str,
    module: &ast::ModModule,
    imports: &Imports,
    handed_in: &HandedIn,
) -> Program {
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
        named_lengths: HashMap::default(),
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
        settable_runs: std::cell::RefCell::new(Vec::new()),
        grad_writes: std::cell::RefCell::new(Vec::new()),
        torch_aliases: expressions::torch_aliases(source),
        equality_windows: std::cell::RefCell::new(Vec::new()),
        model_marks: expressions::model_marks(source),
        optimizer_loop_vars: std::cell::RefCell::new(Vec::new()),
        built_models: HashMap::default(),
        handed: handed::handed(&module.body),
        handed_now: HashMap::default(),
        looped_methods: HashSet::default(),
        attack_steps: HashSet::default(),
    };
    // What optimizers are built over is read from the syntax alone.
    let instances = reach::instance_optimizers(&module.body, imports);
    let reach = reach::reach(source, &module.body, handed_in, &instances);
    for (optimizer, built) in instances {
        if let [model] = built.models.as_slice() {
            lowerer
                .program
                .optimizer_models
                .push((optimizer.clone(), model.clone()));
        }
        lowerer.optimizers.insert(optimizer);
    }
    lowerer.program.handed_out = handed::handed_out(&module.body, imports, &reach);
    lowerer.optimizers.extend(reach.returned.iter().cloned());
    lowerer.built_models = built_models(&reach);
    lowerer.program.accelerate_window_unset = accelerator_accumulates(source) == Some(false);
    lowerer.program.deepspeed =
        source.contains("deepspeed.initialize(") || source.contains("get_global_grad_norm(");
    lowerer.classes(&module.body, 0);
    lowerer.declarations(&module.body, 0);
    lowerer.looped_methods = lowerer.methods_called_in_loops(&module.body);
    // The definitions pass numbers redefined classes again, in the same order.
    lowerer.class_defs.clear();
    lowerer.definitions(&module.body, 0);
    lowerer.named = named_tests(&module.body);
    let body = lowerer.stmts(&module.body, 0);
    lowerer.program.functions.push(Function {
        name: "<module>".into(),
        body,
        assigned: Vec::new(),
        params: Vec::new(),
        keywords: Vec::new(),
    });
    lowerer.program.reach = reach;
    let mut runs = lowerer.settable_runs.take();
    runs.sort_by_key(|s| (s.start, s.end));
    runs.dedup();
    lowerer.program.settable_runs = runs;
    lowerer.program.grad_writes = lowerer.grad_writes.take();
    lowerer.program.literal_flags = syntax::literal_flags(&module.body);
    lowerer.program.uncalled_resets = syntax::uncalled_resets(&module.body);
    lowerer.program
}

/// What the text's `Accelerator(...)` constructions say of accelerate's
/// gradient accumulation: `None` when it builds none; `Some(true)` when one
/// is given a window (`gradient_accumulation_steps=`, a plugin, `**kwargs`)
/// or the text sets one on an accelerator later; `Some(false)` when every
/// one is built without (a window of one, unless a launch config sets one).
///
/// ```
/// use gradlint::frontend::python::accelerator_accumulates;
/// assert_eq!(accelerator_accumulates("a = Accelerator(mixed_precision='fp16')"), Some(false));
/// assert_eq!(accelerator_accumulates("a = Accelerator(gradient_accumulation_steps=4)"), Some(true));
/// assert_eq!(accelerator_accumulates("a = Accelerator(**config)"), Some(true));
/// assert_eq!(accelerator_accumulates("accelerator = get_accelerator()"), None);
/// assert_eq!(accelerator_accumulates("self.accelerator.gradient_accumulation_steps = 8"), Some(true));
/// ```
pub fn accelerator_accumulates(source: &str) -> Option<bool> {
    let bytes = source.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut built = None;
    for at in memchr::memmem::find_iter(bytes, b"Accelerator(") {
        if at > 0 && word(bytes[at - 1]) {
            continue;
        }
        let open = at + "Accelerator".len();
        // The arguments: to the matching parenthesis.
        let mut depth = 0usize;
        let mut end = bytes.len();
        for (i, &c) in bytes.iter().enumerate().skip(open) {
            match c {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let arguments = &source[open..end];
        let windowed = arguments.contains("gradient_accumulation") || arguments.contains('*');
        built = Some(built.unwrap_or(false) || windowed);
    }
    // `accelerator.gradient_accumulation_steps = n` after the build.
    let set_later = memchr::memmem::find_iter(bytes, b"accelerator.gradient_accumulation_steps")
        .any(|at| {
            let rest = source[at + "accelerator.gradient_accumulation_steps".len()..].trim_start();
            rest.starts_with('=') && !rest.starts_with("==")
        });
    if set_later {
        return Some(true);
    }
    built
}
