//! Expressions to gradient events: the calls of an expression, and what
//! each call does to gradients.

use ruff_python_ast::visitor::{walk_expr, Visitor};
use ruff_python_ast::{self as ast, Expr};

use super::gradients::{
    data_owner, grad_owner, grad_owners, is_grad_attribute, is_optimizer_callee, mentions_grad,
};
use super::lowerer::Lowerer;
use super::syntax::MAX_DEPTH;
use super::syntax::{dotted, names_read, span};
use crate::ir::{Event, Node, Opaque, Param, Reset, Tested, Updater};

impl<'s> Lowerer<'s> {
    /// Whether `value` reads `owner`'s gradient, directly or through a local
    /// name bound to it.
    pub(super) fn reads_grad_of(&self, value: &Expr, owner: &str) -> bool {
        if grad_owners(value).iter().any(|o| o == owner) {
            return true;
        }
        let mut names = Vec::new();
        names_read(value, &mut names);
        names.iter().any(|n| {
            self.grad_aliases
                .get(n)
                .is_some_and(|os| os.iter().any(|o| o == owner))
        })
    }

    /// The updater of a hand-written update of `target` (`x`, `x.data`)
    /// computed from `value`.
    pub(super) fn manual_updater(&self, target: &Expr, value: &Expr) -> Updater {
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
    pub(super) fn manual_updater_of(&self, tensor: String) -> Updater {
        if self.param_loop_vars.contains(&tensor) {
            Updater::Manual
        } else {
            Updater::Tensor(tensor)
        }
    }

    /// The reset of `owner.grad` (`= None`, `.zero_()`), if `owner` is a
    /// parameter: of that tensor when it is named, of parameters when it is
    /// a loop variable over them.
    pub(super) fn grad_reset(&self, owner: &Expr) -> Option<Event> {
        if !self.is_parameter(owner) {
            return None;
        }
        Some(Event::Reset(match dotted(owner) {
            Some(d) if !self.param_loop_vars.contains(&d) => Reset::Tensor(d),
            _ => Reset::Parameters,
        }))
    }

    /// The calls of an expression, innermost first (evaluation order).
    pub(super) fn expr(&self, expr: &Expr, out: &mut Vec<Node>) {
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
                    if let Some(nodes) = self.lowerer.handed_call(call) {
                        self.out.extend(nodes);
                    } else if let Some(event) = self.lowerer.call(call) {
                        // A privacy engine's step consumes the passes; a
                        // step asked to (`zero_grad=True`) resets after.
                        let reset_after = match &event {
                            Event::Step(Updater::Optimizer(o))
                                if self.lowerer.program.private.contains(o)
                                    || resets_after(&call.arguments) =>
                            {
                                Some(o.clone())
                            }
                            _ => None,
                        };
                        if matches!(event, Event::Call(_)) {
                            let arguments = self.lowerer.arguments(call);
                            if !arguments.is_empty() {
                                self.out.push(Node::Arguments(arguments));
                            }
                            let optimizers = self.lowerer.handed_optimizers(call);
                            if !optimizers.is_empty() {
                                self.out.push(Node::Handed(optimizers));
                            }
                        }
                        self.out.push(Node::Event(event, span(call)));
                        if let Some(o) = reset_after {
                            let reset = Event::Reset(Reset::Optimizer(o));
                            self.out.push(Node::Event(reset, span(call)));
                        }
                    } else if let Some(opaque) = self.lowerer.opaque(call) {
                        self.out.push(Node::Opaque(opaque));
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

    /// The arguments of a followed call that are optimizers of the caller,
    /// by parameter, with their names (`clear(opt)`).
    fn handed_optimizers(&self, call: &ast::ExprCall) -> Vec<(Param, String)> {
        bound_arguments(call)
            .filter_map(|(p, a)| Some((p.param(), self.canonical(dotted(a)?))))
            .filter(|(_, o)| self.is_optimizer(o))
            .collect()
    }

    /// The arguments of a followed call that read as tests (`(i + 1) % k
    /// == 0`, `not last`, a local name bound to a test), by parameter.
    fn arguments(&self, call: &ast::ExprCall) -> Vec<(Param, Tested)> {
        let test_like = |e: &Expr| match e {
            Expr::Compare(_) | Expr::BoolOp(_) => true,
            Expr::UnaryOp(u) => u.op == ast::UnaryOp::Not,
            // Not the caller's own parameter handed on (`go=update`): most
            // calls of a library hand their parameters on, and reading each
            // costs a tenth of the time on the library corpus.
            Expr::Name(n) => self.named.contains_key(n.id.as_str()),
            _ => false,
        };
        // A literal `True` or `False` decides the callee's tests of its
        // parameter (`first_step(zero_grad=True)` runs `if zero_grad:
        // self.zero_grad()`).
        let literal = |e: &Expr| match e {
            Expr::BooleanLiteral(b) => Some(Tested::constant(b.value)),
            _ => None,
        };
        bound_arguments(call)
            .filter(|(_, a)| test_like(a) || literal(a).is_some())
            .map(|(p, a)| (p.param(), a))
            .map(|(p, a)| (p, literal(a).unwrap_or_else(|| self.classify_test(a))))
            .filter(|(_, t)| *t != Tested::default())
            .collect()
    }

    /// The gradient event of one call, if any: a backward pass, a step, a
    /// reset, an update by hand, or a call of a function or method followed.
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
            Expr::Attribute(a) => self.method_call(a, args),
            Expr::Name(n) if self.classes.contains_key(n.id.as_str()) => None,
            // `zero_grads(params)` (pyro), `zero_gradients(x)` (older
            // torch.autograd) and such helpers clear `.grad`.
            func if dotted(func).is_some_and(|f| {
                let last = f.rsplit('.').next().unwrap_or("");
                matches!(last, "zero_grads" | "zero_grad_" | "zero_gradients")
                    && !self.functions.contains(last)
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

    /// The gradient event of a method call `receiver.method(args)`: a
    /// backward pass, a reset, a step, an update by hand, or a method or
    /// imported function followed.
    fn method_call(&self, a: &ast::ExprAttribute, args: &ast::Arguments) -> Option<Event> {
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
            // `for opt in optimizers: opt.zero_grad()`: a reset of each
            // (`opt|opt_g|opt_d`, or `opt|X[*]` for all `X` holds; `opt`
            // itself for steps on the same loop variable).
            "zero_grad" if self.iterated_optimizers(Some(&receiver_text())).is_some() => {
                let var = receiver_text();
                let over = self.iterated_optimizers(Some(&var))?;
                Some(Event::Reset(Reset::Optimizer(
                    std::iter::once(var).chain(over).collect::<Vec<_>>().join("|"),
                )))
            }
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
                    let r = self.each_of_loop(r);
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
                    Some(Event::Step(Updater::Optimizer(self.each_of_loop(opt))))
                } else {
                    None
                }
            }
            "optimizer_step" => {
                let opt = args
                    .args
                    .first()
                    .map(|e| dotted(e).unwrap_or_else(|| self.text(e)))?;
                Some(Event::Step(Updater::Optimizer(self.each_of_loop(opt))))
            }
            "add_" | "sub_" | "copy_" => {
                // Its own gradient, directly or through a name bound to it
                // (`dx = lr * x.grad / x.grad.norm()`, `x.data.add_(dx)`).
                let own = data_owner(&a.value).and_then(dotted).filter(|w| {
                    args.args
                        .iter()
                        .chain(args.keywords.iter().map(|k| &k.value))
                        .any(|v| self.reads_grad_of(v, w))
                });
                let updates = !mentions_grad(&a.value)
                    && (args.args.iter().any(mentions_grad)
                        || args.keywords.iter().any(|k| mentions_grad(&k.value))
                        || own.is_some());
                if !updates {
                    return None;
                }
                Some(Event::Step(match own {
                    Some(w) => self.manual_updater_of(w),
                    None => Updater::Manual,
                }))
            }
            // SAM's API (`opt.second_step(zero_grad=True)`): the base
            // optimizer's step, then, when asked, a reset (added by
            // [`Lowerer::expr`]).
            "second_step" if self.is_optimizer(&self.canonical(receiver_text())) => {
                let r = self.canonical(receiver_text());
                Some(Event::Step(Updater::Optimizer(self.each_of_loop(r))))
            }
            // Any other method of an optimizer asked to reset after its
            // work (`opt.first_step(zero_grad=True)`, a sharpness-aware
            // perturbation): what it applies is not an update.
            _ if resets_after(args) && self.is_optimizer(&self.canonical(receiver_text())) => {
                Some(Event::Reset(Reset::Optimizer(self.canonical(receiver_text()))))
            }
            // `obj.m()` on an unknown object: some class's method `m`,
            // never a module-level function `m` (`model.train()`).
            name if self.functions.contains(name) => Some(Event::Call(format!("*.{name}"))),
            _ => None,
        }
    }
}

/// Whether a call is asked to reset the gradients when it is done:
/// `zero_grad=True` among its keywords.
fn resets_after(args: &ast::Arguments) -> bool {
    args.find_keyword("zero_grad")
        .is_some_and(|k| matches!(k.value, Expr::BooleanLiteral(ref b) if b.value))
}

impl Lowerer<'_> {
    /// A call with no gradient event that the analysis cannot see into and
    /// that is handed an optimizer, a model the file builds an optimizer
    /// over, or `self`, as receiver or argument: it could reset or step.
    /// Calls of the file's own functions were followed (not opaque);
    /// well-known calls that touch no gradient (logging, saving, clipping,
    /// moving, evaluating) are left out by name.
    fn opaque(&self, call: &ast::ExprCall) -> Option<Opaque> {
        let callee = dotted(&call.func)?;
        let (receiver, method) = match callee.rsplit_once('.') {
            Some((r, m)) => (Some(r), m),
            None => (None, callee.as_str()),
        };
        // A constructor (`DataParallel(model)`, `SGD(model.parameters())`)
        // and a model's forward pass (`self.model(x)`) reset nothing.
        let constructor = method.starts_with(|c: char| c.is_ascii_uppercase());
        // Calls into logging and plotting libraries and the standard
        // library (`wandb.watch(model)`, `os.path.join`).
        let first = callee.split('.').next().unwrap_or("");
        let library = matches!(
            first,
            "wandb"
                | "mlflow"
                | "neptune"
                | "logging"
                | "logger"
                | "writer"
                | "tb_writer"
                | "summary_writer"
                | "plt"
                | "np"
                | "numpy"
                | "os"
                | "sys"
                | "json"
                | "pickle"
                | "random"
                | "time"
                | "math"
                | "tqdm"
                | "shutil"
                | "copy"
                | "itertools"
                | "functools"
        );
        // torch's own functions (`torch.argmax(q)`, through an alias
        // `import torch as T`) compute on tensors: they reset nothing.
        let torch = matches!(first, "torch" | "F") || self.torch_aliases.iter().any(|a| a == first);
        if constructor
            || library
            || torch
            || inert_call(method)
            || self.functions.contains(method)
            || self.is_model(&callee)
            || is_optimizer_callee(&callee)
        {
            return None;
        }
        let mut optimizers = Vec::new();
        let mut handed = false;
        let mut hand = |text: String| {
            let text = self.canonical(text);
            // `OPTIMIZER_NAME`: a constant, not an object.
            let last = text.rsplit('.').next().unwrap_or(&text);
            if !last.chars().any(|c| c.is_ascii_lowercase()) {
                return;
            }
            if text == "self" || self.is_model(&text) {
                handed = true;
            } else if self.is_optimizer(&text) {
                handed = true;
                if !optimizers.contains(&text) {
                    optimizers.push(text);
                }
            }
        };
        // Only an optimizer counts as a receiver: `self.x(...)` is a
        // module's forward or an inherited method, `model.encode(x)` the
        // model's own code; what they are handed counts.
        if let Some(r) = receiver.filter(|r| *r != "self") {
            let r = self.canonical(r.to_string());
            if self.is_optimizer(&r) {
                hand(r);
            }
        }
        let args = &call.arguments;
        for value in args
            .args
            .iter()
            .chain(args.keywords.iter().map(|k| &k.value))
        {
            // `f(model.parameters())` hands the model.
            let value = match value {
                Expr::Call(c) if c.arguments.is_empty() => match c.func.as_ref() {
                    Expr::Attribute(a) if a.attr.id.as_str() == "parameters" => a.value.as_ref(),
                    _ => value,
                },
                _ => value,
            };
            if let Some(d) = dotted(value) {
                hand(d);
            }
        }
        // `reset_grads()`, `clear_grad(params)`: named for gradients.
        let named_for_gradients = method.to_ascii_lowercase().contains("grad")
            && !matches!(
                method,
                "no_grad"
                    | "enable_grad"
                    | "set_grad_enabled"
                    | "grad"
                    | "inference_mode"
                    | "retain_grad"
            );
        (handed || named_for_gradients).then(|| Opaque {
            span: span(call),
            callee,
            optimizers,
        })
    }

    /// Whether `name` is a model: one an optimizer of the file is built
    /// over, or one whose parameters or gradients the file reaches
    /// (`name.parameters()`, `name.zero_grad()`).
    fn is_model(&self, name: &str) -> bool {
        self.program
            .optimizer_models
            .iter()
            .any(|(_, m)| crate::ir::same_name(m, name))
            || self
                .model_marks
                .iter()
                .any(|&at| self.source[..at].ends_with(name))
    }
}

impl Lowerer<'_> {
    /// What the loop variable `name` runs over, when it runs over
    /// optimizers (innermost loop first).
    /// The optimizer a step names: a loop variable over optimizers (`for
    /// opt in optimizers: opt.step()`, `scaler.step(opt)`) is a step of
    /// each (`opt|optimizers[*]`, as the reset of each is named).
    fn each_of_loop(&self, optimizer: String) -> String {
        match self.iterated_optimizers(Some(&optimizer)) {
            Some(over) => std::iter::once(optimizer)
                .chain(over)
                .collect::<Vec<_>>()
                .join("|"),
            None => optimizer,
        }
    }

    fn iterated_optimizers(&self, name: Option<&str>) -> Option<Vec<String>> {
        let name = name?;
        self.optimizer_loop_vars
            .borrow()
            .iter()
            .rev()
            .find(|(v, _)| v == name)
            .map(|(_, over)| over.clone())
    }
}

/// The offsets of the text's `.parameters()`, `.named_parameters()` and
/// `.zero_grad(`, in order: what [`Lowerer::is_model`] looks before.
pub(super) fn model_marks(source: &str) -> Vec<usize> {
    let mut marks: Vec<usize> = [".parameters()", ".named_parameters()", ".zero_grad("]
        .iter()
        .flat_map(|m| source.match_indices(m).map(|(at, _)| at))
        .collect();
    marks.sort_unstable();
    marks
}

/// Where an argument binds the callee's parameters: the n-th positional
/// one (`self` not counted), or a keyword.
#[derive(Clone, Copy)]
enum Bound<'a> {
    Position(usize),
    Keyword(&'a str),
}

impl Bound<'_> {
    fn param(self) -> Param {
        match self {
            Bound::Position(i) => Param::Position(i),
            Bound::Keyword(k) => Param::Keyword(k.to_string()),
        }
    }
}

/// A call's arguments with the parameters they bind: the positional ones up
/// to the first `*args`, then the keyword ones (`**kwargs` left out).
fn bound_arguments(call: &ast::ExprCall) -> impl Iterator<Item = (Bound<'_>, &Expr)> {
    let positional = call
        .arguments
        .args
        .iter()
        .take_while(|a| !a.is_starred_expr())
        .enumerate()
        .map(|(i, a)| (Bound::Position(i), a));
    let keywords = call
        .arguments
        .keywords
        .iter()
        .filter_map(|k| Some((Bound::Keyword(k.arg.as_ref()?.id.as_str()), &k.value)));
    positional.chain(keywords)
}

/// Calls that touch no gradient whatever they are handed: builtins, and
/// methods named for logging, saving, evaluating, clipping, moving or
/// averaging weights (by the words of their name). Remembered by name:
/// asked of every call of every file lowered, mostly of the same names.
fn inert_call(method: &str) -> bool {
    thread_local! {
        static KNOWN: std::cell::RefCell<rustc_hash::FxHashMap<String, bool>> =
            std::cell::RefCell::default();
    }
    KNOWN.with_borrow_mut(|known| match known.get(method) {
        Some(&inert) => inert,
        None => {
            let inert = inert_by_name(method);
            known.insert(method.to_string(), inert);
            inert
        }
    })
}

/// [`inert_call`], read from the name.
fn inert_by_name(method: &str) -> bool {
    const EXACT: &[&str] = &[
        "enumerate",
        "zip",
        "list",
        "tuple",
        "range",
        "iter",
        "next",
        "sorted",
        "reversed",
        "map",
        "filter",
        "dict",
        "set",
        "min",
        "max",
        "sum",
        "any",
        "all",
        "print",
        "format",
        "callable",
        "functional_call",
        "isinstance",
        "getattr",
        "hasattr",
        "setattr",
        "super",
        "len",
        "type",
        "str",
        "repr",
        "id",
        "vars",
        "dir",
        "deepcopy",
        "copy",
        "train",
        "to",
        "cuda",
        "cpu",
        "float",
        "half",
        "double",
        "detach",
        "item",
        "size",
        "forward",
        "apply",
        "parameters",
        "named_parameters",
        "modules",
        "children",
        // A container's views (`self.optims.values()`): the objects are
        // handed on, not used.
        "values",
        "items",
        "keys",
        // A list grown (`Z.append(z)`): kept, not used.
        "append",
        "extend",
    ];
    const WORDS: &[&str] = &[
        "log",
        "print",
        "save",
        "checkpoint",
        "load",
        "eval",
        "valid",
        "test",
        "metric",
        "meter",
        "accura",
        "ema",
        "clip",
        "summary",
        "write",
        "scalar",
        "wandb",
        "plot",
        "show",
        "sched",
        "record",
        "track",
        "state_dict",
        "param",
        "watch",
        "loss",
        "scale",
        "toggle",
        "prepare",
        "wrap",
        "sync",
        "reduce",
        "barrier",
        "broadcast",
        "requires_grad",
        "freeze",
        "accumulate",
        // Weights (re)initialised or copied into a target network: no
        // gradient is touched.
        "init",
        "soft_update",
        "hard_update",
        "polyak",
        "target",
        "normalize",
        // `toogle_grad(model, flag)`, a requires_grad switch copied under
        // this spelling.
        "toogle",
    ];
    let lower = method.to_ascii_lowercase();
    EXACT.contains(&method)
        || lower.starts_with("register")
        || lower.starts_with("get")
        || WORDS.iter().any(|w| lower.contains(w))
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

/// How deeply `expr` nests (counted up to a little past [`MAX_DEPTH`]).
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

/// The names `import torch as X` binds in `source`.
pub(super) fn torch_aliases(source: &str) -> Vec<String> {
    const IMPORT: &str = "import torch as ";
    source
        .match_indices(IMPORT)
        .filter_map(|(at, _)| {
            let rest = &source[at + IMPORT.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end > 0).then(|| rest[..end].to_string())
        })
        .collect()
}
