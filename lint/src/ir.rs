//! The language-neutral model of training code that the rules read: the
//! gradient events of a function body (backward, step, reset) inside its
//! control flow (branches, loops, jumps). The Python and Rust front ends lower
//! their syntax trees to it; unknown calls are left out (opaque).

/// A byte range in the source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The same range moved by `by` bytes.
    pub fn shifted(self, by: usize) -> Self {
        Self::new(self.start + by, self.end + by)
    }

    /// The other file of the invocation this span lies in (0-based), when
    /// it is not in the file being analysed.
    pub fn foreign_file(self) -> Option<usize> {
        (self.start >= FOREIGN_BASE).then(|| self.start / FOREIGN_BASE - 1)
    }

    /// Whether `other` lies inside this span.
    pub fn contains(&self, other: Span) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// What a reset clears.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reset {
    /// `opt.zero_grad()`: the gradients of one optimizer's parameters.
    Optimizer(String),
    /// `opt = torch.optim.SGD([x], ...)`: a new optimizer, usually over new
    /// tensors, starts with no gradient history.
    NewOptimizer(String),
    /// `opt = SGD(model.parameters())`: a new optimizer over a model's
    /// parameters clears nothing, unless the loop builds the model anew
    /// (then it is a [`Reset::NewOptimizer`] for the analysis).
    NewModelOptimizer {
        /// The optimizer variable.
        optimizer: String,
        /// The model whose parameters it takes.
        model: String,
    },
    /// `model.zero_grad()`: the gradients of one model's parameters.
    Model(String),
    /// `p.grad = None`, `p.grad.zero_()` on a loop variable over
    /// parameters: parameters' gradients directly.
    Parameters,
    /// `w.grad = None`, `w.grad.zero_()` on a named tensor: its gradient.
    Tensor(String),
    /// `q = torch.tensor(..., requires_grad=True)`: a tensor bound anew
    /// starts with no gradient (its own only; never an explicit reset).
    NewTensor(String),
    /// Rust/candle: `acc = ...`, a `GradStore` variable bound anew.
    Store(String),
}

/// What updates parameters from their gradients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Updater {
    /// An optimizer, by the text of its expression (`opt`, `self.optimizer`).
    Optimizer(String),
    /// A manual update such as `p -= lr * p.grad` over a model's
    /// parameters (a loop variable), or of an unknown tensor.
    Manual,
    /// A named tensor updated by hand from its own gradient (`w -= lr *
    /// w.grad`, an adversarial perturbation's `delta.data = delta + a *
    /// delta.grad.sign()`): only a reset of its own `.grad` clears it.
    Tensor(String),
    /// Rust/candle: `opt.step(&acc)` applies the `GradStore` variable `acc`.
    Store(String),
}

impl Updater {
    /// The name shown in messages.
    pub fn describe(&self) -> String {
        match self {
            // `opt|optimizers[*]`: the loop variable the source names.
            Updater::Optimizer(o) => format!("`{}`", o.split('|').next().unwrap_or(o)),
            Updater::Manual => "the manual update".to_string(),
            Updater::Tensor(t) => format!("the manual update of `{t}`"),
            Updater::Store(s) => format!("the GradStore `{s}`"),
        }
    }
}

/// A gradient event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Gradients are added into parameters' `.grad` (or a store).
    Backward,
    /// An update applies gradients.
    Step(Updater),
    /// Gradients are cleared.
    Reset(Reset),
    /// Rust/candle: `let x = loss.backward()?`: a `GradStore` bound from a
    /// backward pass (also a [`Reset::Store`] of `x`).
    BindStore(String),
    /// Rust/candle: `acc.extend(loss.backward()?)`: a backward pass summed
    /// into the `GradStore` variable `acc`.
    Extend(String),
    /// A call of a function defined in the same file, followed by the analysis.
    Call(String),
}

/// Where a counter stands in its window, modulo a symbolic `k`:
/// `Low(n)` is `n`, `High(n)` is `k - n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Residue {
    /// `counter % k == n`.
    Low(u32),
    /// `counter % k == k - n` (`(i + 1) % k == 0` is `High(1)`).
    High(u32),
}

impl Residue {
    /// From a signed value: `v >= 0` is `Low(v)`, `v < 0` is `High(-v)`.
    pub fn of(v: i64) -> Self {
        if v >= 0 {
            Residue::Low(v.min(u32::MAX as i64) as u32)
        } else {
            Residue::High(v.unsigned_abs().min(u32::MAX as u64) as u32)
        }
    }

    /// How far from a window boundary (for the analysis' bound).
    pub fn magnitude(self) -> u32 {
        match self {
            Residue::Low(n) | Residue::High(n) => n,
        }
    }
}

/// The counter of `accelerator.accumulate` micro-steps: a prepared
/// optimizer's step and reset inside the block act when its window closes.
pub const ACCELERATE_COUNTER: &str = "<accelerate>";

/// The window length of [`ACCELERATE_COUNTER`] (the accelerator's
/// `gradient_accumulation_steps`).
pub const ACCELERATE_WINDOW: &str = "<gradient_accumulation_steps>";

/// The callees of the calls inside loops of `nodes` (`Class.method`, a
/// receiver's `|receiver` left off), in order. Loops whose span is in
/// `unless` are read as straight code (functions read as run once per
/// batch only by their name).
pub fn calls_in_loops<'n>(nodes: &'n [Node], unless: &[Span], out: &mut Vec<&'n str>) {
    fn walk<'n>(nodes: &'n [Node], in_loop: bool, unless: &[Span], out: &mut Vec<&'n str>) {
        for n in nodes {
            match n {
                Node::Event(Event::Call(c), _) if in_loop => {
                    out.push(c.split('|').next().unwrap_or(c));
                }
                Node::If { branches, .. } => {
                    branches.iter().for_each(|b| walk(b, in_loop, unless, out))
                }
                Node::Loop { body, span, .. } => {
                    walk(body, in_loop || !unless.contains(span), unless, out)
                }
                Node::Accumulate(body) => walk(body, in_loop, unless, out),
                _ => {}
            }
        }
    }
    walk(nodes, false, unless, out);
}

/// A node tree rebuilt: each event through `event`, each loop's span
/// through `span` and its assigned names through `name`; branches, tests and
/// the rest kept.
pub fn map_nodes(
    nodes: &[Node],
    event: &dyn Fn(&Event, Span) -> Node,
    span: &dyn Fn(Span) -> Span,
    name: &dyn Fn(&String) -> String,
) -> Vec<Node> {
    nodes
        .iter()
        .map(|node| match node {
            Node::Event(e, at) => event(e, *at),
            Node::If {
                branches,
                exhaustive,
                tests,
                at,
            } => Node::If {
                branches: branches
                    .iter()
                    .map(|b| map_nodes(b, event, span, name))
                    .collect(),
                exhaustive: *exhaustive,
                tests: tests.clone(),
                at: span(*at),
            },
            Node::Loop {
                body,
                span: at,
                assigned,
                counters,
            } => Node::Loop {
                body: map_nodes(body, event, span, name),
                span: span(*at),
                assigned: assigned.iter().map(name).collect(),
                counters: counters.clone(),
            },
            Node::Accumulate(body) => Node::Accumulate(map_nodes(body, event, span, name)),
            Node::Handed(handed) => {
                Node::Handed(handed.iter().map(|(p, o)| (p.clone(), name(o))).collect())
            }
            other => other.clone(),
        })
        .collect()
}

/// What a branch condition is, for the analysis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CondClass {
    /// An accumulation counter test: `counter % modulus` lands on `residue`.
    Counter {
        /// The counter (`step`, `self.global_step`).
        counter: String,
        /// The window length's text (`args.gradient_accumulation_steps`).
        modulus: String,
        /// Where in the window the test holds.
        residue: Residue,
        /// Whether it holds when the window length is 1.
        at_one: bool,
        /// Whether the window is the whole run of a loop (`i == 0`, `i ==
        /// n - 1` over `range(n)`) rather than a `%` test.
        whole_run: bool,
    },
    /// True when a value is non-finite or out of range (`torch.isnan(loss)`,
    /// `grad_norm > max_norm`): the side on which a pass is skipped.
    Skip,
    /// A flag (`args.use_amp`, `cfg.optim == "sgd"`) reading these names;
    /// loop-invariant unless the loop assigns one of them.
    Flag(Vec<String>),
    /// `x is not None`: a flag, or, when the loop assigns `x`, true from the
    /// second iteration on (`params = ...` after `if params is not None:`).
    NotNone(String),
    /// True for the analysis: `p.grad is not None` (a reset or an update it
    /// guards has nothing to act on when it fails), `i % 1 == 0`.
    Always,
    /// `k == 1` on a window length (the modulus text): with a window of one,
    /// every boundary test of a counter modulo `k` holds.
    WindowOne(String),
    /// A local name bound once to a test of no other class (`need_update =
    /// last_batch or ...`): unknown, but the same in every test of it
    /// within one iteration.
    Bound,
}

/// A normalised branch condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cond {
    /// The normalised expression (same key, same condition).
    pub key: String,
    /// Its class.
    pub class: CondClass,
}

/// The test of one branch: the branch runs when `cond` is `!negated`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Test {
    /// The condition.
    pub cond: Cond,
    /// Whether the branch runs when the condition is false (`if not ...`).
    pub negated: bool,
}

impl Test {
    /// The same condition, the other way.
    pub fn flipped(&self) -> Test {
        Test {
            cond: self.cond.clone(),
            negated: !self.negated,
        }
    }
}

/// What a branch's test tells of the classified conditions, as alternatives
/// (one of them holds), each a list of tests that hold together: when the
/// test holds, and when it fails. `a or b` holds: `[[a], [b]]`; `a and b`
/// fails: `[[not a], [not b]]`; an unclassified test: `[[]]` (nothing known).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tested {
    /// The alternatives when the test holds.
    pub holds: Vec<Vec<Test>>,
    /// The alternatives when the test fails.
    pub fails: Vec<Vec<Test>>,
}

impl Default for Tested {
    fn default() -> Self {
        Tested {
            holds: vec![Vec::new()],
            fails: vec![Vec::new()],
        }
    }
}

/// Alternatives kept per test; past it, nothing is known (a weaker, still
/// sound answer).
const MAX_ALTERNATIVES: usize = 8;

impl Tested {
    /// A test that always goes one way (`True`, `False`).
    pub fn constant(value: bool) -> Self {
        let test = Test {
            cond: Cond {
                key: "True".into(),
                class: CondClass::Always,
            },
            negated: !value,
        };
        Tested {
            holds: vec![vec![test.clone()]],
            fails: vec![vec![test.flipped()]],
        }
    }

    /// One classified condition: it holds one way, fails the other.
    pub fn single(test: Test) -> Tested {
        Tested {
            fails: vec![vec![test.flipped()]],
            holds: vec![vec![test]],
        }
    }

    /// Both sets of alternatives hold: every pair, joined.
    pub fn both(a: &[Vec<Test>], b: &[Vec<Test>]) -> Vec<Vec<Test>> {
        let mut out = Vec::new();
        for x in a {
            for y in b {
                let mut joined = x.clone();
                for t in y {
                    if !joined.contains(t) {
                        joined.push(t.clone());
                    }
                }
                out.push(joined);
            }
        }
        if out.len() > MAX_ALTERNATIVES {
            return vec![Vec::new()];
        }
        out
    }

    /// One of the two sets of alternatives holds.
    pub fn either(a: &[Vec<Test>], b: &[Vec<Test>]) -> Vec<Vec<Test>> {
        let out: Vec<Vec<Test>> = a.iter().chain(b).cloned().collect();
        // An alternative that assumes nothing absorbs the others.
        if out.len() > MAX_ALTERNATIVES || out.iter().any(Vec::is_empty) {
            return vec![Vec::new()];
        }
        out
    }
}

/// A counter that a loop advances by one per iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Its name.
    pub name: String,
    /// Its value when the loop starts, if the loop sets it
    /// (`for i, b in enumerate(loader)`: 0).
    pub start: Option<i64>,
    /// Whether a new run of the loop resumes where the last one left it (an
    /// equality counter that nothing sets between runs).
    pub persists: bool,
    /// Whether it counts a `range` or an `enumerate` (no value twice in a
    /// run) and the loop calls a model it picks (`models[i](x)`): an
    /// optimizer it picks too is another each iteration.
    pub picks_models: bool,
}

impl Counter {
    /// A counter a new run of its loop starts again (`start` if the loop
    /// sets it).
    pub fn new(name: String, start: Option<i64>) -> Self {
        Counter {
            name,
            start,
            persists: false,
            picks_models: false,
        }
    }
}

/// A statement of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An event at a place in the source.
    Event(Event, Span),
    /// Alternative branches; without an `else`, a path skips them all.
    If {
        /// The branches' bodies.
        branches: Vec<Vec<Node>>,
        /// Whether one branch always runs (an `else`).
        exhaustive: bool,
        /// What the test of each branch tells (an `elif` runs only when the
        /// tests above it failed; an `else` tells nothing).
        tests: Vec<Tested>,
        /// The first test (or the matched value): where a finding that
        /// rests on an unclassified test points.
        at: Span,
    },
    /// A loop (`for`, `while`, `loop`).
    Loop {
        /// The body.
        body: Vec<Node>,
        /// The whole loop.
        span: Span,
        /// Names (dotted) assigned anywhere in the body.
        assigned: Vec<String>,
        /// Counters it advances.
        counters: Vec<Counter>,
    },
    /// `with accelerator.accumulate(model):` (the framework gates step and reset).
    Accumulate(Vec<Node>),
    /// `break`.
    Break,
    /// `continue`.
    Continue,
    /// `return`.
    Return,
    /// `raise`: the path ends (an exception leaves the function and the
    /// loop; it never returns to the caller's next statement).
    Raise,
    /// `name = True` / `name = False`: the flag tested as `if name:` holds
    /// (or not) from here on in this iteration (`skip = True` in a branch,
    /// `if not skip: opt.step()` after it).
    Set(String, bool),
    /// What the followed call right after it hands the parameters of its
    /// callee (`back(loss, opt, update=(i + 1) % k == 0)`): each argument
    /// read as a test, which stands for the parameter's own test in the
    /// callee's body (`if update: opt.step()`).
    Arguments(Vec<(Param, Tested)>),
    /// The optimizers the followed call right after it hands its callee,
    /// by the caller's names (`clear(opt)`, with `def clear(optim):
    /// optim.zero_grad()`: the callee's `optim` is `opt`).
    Handed(Vec<(Param, String)>),
    /// A call the analysis cannot follow that is handed an optimizer, a
    /// model or `self` (`train_utils.step(model, opt)`): it could reset or
    /// step. The rules read it as doing neither; [`crate::assumptions`]
    /// checks what a finding owes to that reading.
    Opaque(Opaque),
}

/// A callee's parameter, as a call names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// The n-th positional argument (`self` not counted).
    Position(usize),
    /// A keyword argument.
    Keyword(String),
}

/// Whether a branch ends by leaving the iteration or the function (`break`,
/// `continue`, `return`, `raise`).
pub fn leaves(branch: &[Node]) -> bool {
    matches!(
        branch.last(),
        Some(Node::Break | Node::Continue | Node::Return | Node::Raise)
    )
}

/// A call the analysis cannot see into, and what it is handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opaque {
    /// The call.
    pub span: Span,
    /// The callee as written (`utils.train_step`).
    pub callee: String,
    /// The optimizers it is handed (as receiver or argument): it could
    /// step them.
    pub optimizers: Vec<String>,
}

/// A function (or the module's top level) of a file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Function {
    /// Its name (`<module>` for the top level).
    pub name: String,
    /// Its body.
    pub body: Vec<Node>,
    /// Names (dotted) assigned in its body.
    pub assigned: Vec<String>,
    /// Its positional parameters, in order (`self` left out).
    pub params: Vec<String>,
    /// Its keyword-only parameters.
    pub keywords: Vec<String>,
}

impl Function {
    /// Its own parameter that an argument at `p` binds, unless its body
    /// binds the name again (a keyword it has no parameter of, taken by
    /// `**kwargs`, binds none).
    pub fn bound_parameter(&self, p: &Param) -> Option<&str> {
        let param = match p {
            Param::Keyword(k) => self.params.iter().chain(&self.keywords).find(|x| *x == k)?,
            Param::Position(i) => self.params.get(*i)?,
        };
        (!self.assigned.contains(param)).then_some(param.as_str())
    }
}

/// Spans of events from another file of the same invocation start at
/// `(file + 1) * FOREIGN_BASE`: they never fall inside a span of the file
/// being analysed, and say which file they belong to.
pub const FOREIGN_BASE: usize = 1 << 40;

/// The functions of the other files of one invocation, by qualified name
/// (`<file>::Class.method`, `<file>::function`), spans shifted by
/// [`FOREIGN_BASE`].
pub type Imported = std::sync::Arc<rustc_hash::FxHashMap<String, Function>>;

/// A lowered file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Program {
    /// Every function, methods included, and the top level.
    pub functions: Vec<Function>,
    /// Optimizer variable -> the model whose parameters it updates
    /// (`opt_d = Adam(net_d.parameters())`), where known.
    pub optimizer_models: Vec<(String, String)>,
    /// Functions of other files that calls of this one may reach (never
    /// analysed as this file's own).
    pub imported: Option<Imported>,
    /// Whether the file drives a DeepSpeed engine (`deepspeed.initialize`,
    /// `get_global_grad_norm`): accelerate's optimizer reset is then a no-op
    /// and the engine clears the gradients after its step.
    pub deepspeed: bool,
    /// Whether accelerate's accumulation window is set nowhere in the code:
    /// the `Accelerator` of the file (or, with none there, of the tree) is
    /// built with no `gradient_accumulation_steps`. Its window is then one
    /// unless a launch config sets one ([`crate::frontend::python::accelerator_accumulates`]).
    pub accelerate_window_unset: bool,
    /// The other files of the invocation (by number) whose window is unset
    /// the same way: an `accelerator.accumulate` block inlined from one of
    /// them is read with its own file's window.
    pub accelerate_unset_files: Vec<usize>,
    /// The reading where `accelerator.accumulate` gates nothing (a window
    /// of one) in the blocks whose window is unset; turned on to weigh
    /// findings.
    pub accelerate_window_one: bool,
    /// Optimizers a privacy engine is attached to
    /// (`privacy_engine.attach(optimizer)`): each step builds `.grad` from
    /// the per-sample gradients of the passes since the last step and clears
    /// those; their virtual steps collect passes that only the optimizer's
    /// own reset clears (a model's `zero_grad()` does not).
    pub private: Vec<String>,
    /// Methods classes of the file inherit from classes of other files,
    /// copied in when those files are lowered.
    pub inherited: Vec<Inherited>,
    /// Functions read as run once per batch only because of their name
    /// (a method `train_step` that runs backward, step and reset): the
    /// span of the loop made of each body, and the function's name.
    pub per_batch_by_name: Vec<(Span, String)>,
    /// What the file's backward passes certainly reach (Python only; empty
    /// for Rust): read by GL009 alone.
    pub reach: Reach,
    /// Loops over `range(n)` with `n` a setting (`range(gen_iters)`, not a
    /// number): such a loop may run once.
    pub settable_runs: Vec<Span>,
    /// `p.grad = g` with `g` not `None`: a reset for the analysis (what the
    /// passes left is replaced), but what a step after it applies is `g`,
    /// not zeros (GL003).
    pub grad_writes: Vec<Span>,
    /// Names the file binds only to `True` or `False`: a flag's value
    /// carries from one iteration to the next (Python only).
    pub literal_flags: Vec<String>,
    /// Resets written as statements without their call (`optimizer.zero_grad`
    /// on a line of its own): where, and the receiver (Python only).
    pub uncalled_resets: Vec<(Span, String)>,
    /// Its calls of other files' functions that hand them optimizers
    /// built over models they hand too (Python only).
    pub handed_out: Vec<HandedOut>,
    /// This file's functions and methods (`Class.method`) that loops of
    /// other files call (`agent.learn(batch)` in a training loop): run
    /// once per iteration there, whatever their name.
    pub called_from_loops: Vec<String>,
}

/// A call of a function of another file (`train_one_epoch(model, disc,
/// loader, opt_g, opt_d)`) with the optimizers among its arguments whose
/// models are known here: the callee learns what its parameters are built
/// over, as when the call is in its own file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandedOut {
    /// The callee's qualified name (`3::train_one_epoch`).
    pub callee: String,
    /// Each positional argument's dotted text (`None`: anything else).
    pub positional: Vec<Option<String>>,
    /// Keyword arguments with a dotted value: (keyword, text).
    pub keywords: Vec<(String, String)>,
    /// The caller's optimizers among the arguments, each assignment's
    /// [`Built`] (by the caller's names).
    pub optimizers: Vec<(String, Built)>,
}

/// What other files' calls hand to a file's functions, by function name.
pub type HandedIn = rustc_hash::FxHashMap<String, Vec<HandedOut>>;

/// What the backward passes of a file certainly reach, from an
/// intra-function def-use of their losses: the models a loss is computed
/// through, the models each optimizer was built over, and the models the
/// file may freeze. Everything here errs towards "not known" (an empty
/// list, a model taken as frozen).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reach {
    /// Per backward pass of the file, what its loss reaches.
    pub passes: Vec<Pass>,
    /// Per assignment of an optimizer constructor (`opt_d =
    /// Adam(net_d.parameters())`), what it was built over; a name bound
    /// otherwise as well is listed with [`Built::unknown`].
    pub optimizers: Vec<(String, Built)>,
    /// Models whose parameters the file may freeze (`net_d.requires_grad_(False)`,
    /// `for p in net_d.parameters(): p.requires_grad = False`,
    /// `set_requires_grad([net_d], False)`).
    pub frozen: Vec<String>,
    /// Whether the file may freeze parameters it does not name (Lightning's
    /// `toggle_optimizer`, `p.requires_grad = False` over a list).
    pub freezes_unnamed: bool,
    /// Whether a pass through two models whose optimizers were reset
    /// together at the top of the iteration is read as meant for both (a
    /// joint loss) rather than as a stray pass: the analysis reads it as
    /// stray; [`crate::assumptions`] turns the reading.
    pub joint_loss_shared: bool,
    /// Whether a pass through a whole model is read as reaching an
    /// optimizer built over a part of it (`self.vqgan(x)` for an optimizer
    /// over `self.vqgan.encoder`): the analysis reads it so (a forward
    /// pass may skip a part); [`crate::assumptions`] turns the reading.
    pub parts_unreached: bool,
    /// Names bound to the optimizers a function of the file builds and
    /// returns (`self.opt_g, self.opt_d = self.configure_optimizers()`).
    pub returned: Vec<String>,
    /// Whether a pass that runs between an optimizer's reset and its step
    /// is read as another optimizer's when its loss is named for that one
    /// alone (`g_loss` for `gen_optimizer`, with `dis_optimizer` reset
    /// beside it), or when it alone of the passes goes through that one's
    /// model (SAC's `policy_loss`, the only pass through the actor): the
    /// analysis reads it as the pass of every optimizer it precedes;
    /// [`crate::assumptions`] turns the reading.
    pub losses_named: bool,
}

/// What one backward pass's loss reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The backward call (the span of its [`Event::Backward`]).
    pub span: Span,
    /// The loss's text (`g_loss`).
    pub loss: String,
    /// Callees (dotted) whose output the loss is certainly computed from
    /// with gradients flowing: `net_d` for `net_d(fake)` or
    /// `net_d.forward(fake)`, not under `.detach()`, `torch.no_grad()`,
    /// `.item()`.
    pub calls: Vec<String>,
    /// Of `calls`, those not read only through the arguments of a function
    /// of an imported module (`rl_utils.compute_advantage(gamma, delta)`
    /// may detach them).
    pub direct: Vec<String>,
    /// Callees whose output the loss reads only under `.detach()` (`net_g`
    /// for `net_d(fake.detach())` with `fake = net_g(z)`): a model its
    /// author keeps this loss's gradients out of.
    pub detached: Vec<String>,
}

/// What an optimizer was built over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Built {
    /// The models whose `.parameters()` it takes (all of them, outside
    /// comprehensions).
    pub models: Vec<String>,
    /// Whether those are all it takes (no other list of tensors).
    pub exact: bool,
    /// Every model some of its parameters come from (subsets too:
    /// `[p for p in net.parameters() if ...]`, a list that a loop over
    /// `net.named_parameters()` appends to).
    pub parts: Vec<String>,
    /// Whether `parts` are all its parameters come from.
    pub closed: bool,
    /// The tensors it takes by name, listed directly (`Adam([self.log_alpha])`);
    /// each is in `models` and `parts` too.
    pub tensors: Vec<String>,
}

impl Built {
    /// Nothing known.
    pub fn unknown() -> Self {
        Built::default()
    }
}

impl Reach {
    /// Whether a reset of optimizer `a` clears every gradient optimizer `b`
    /// steps: `a` is built over whole models that include every model
    /// `b`'s parameters come from, and those are all `b` takes
    /// (`optim_ae` over the encoder and the decoder, `optim_encoder` over
    /// the encoder).
    pub fn clears_all_of(&self, a: &str, b: &str) -> bool {
        a != b
            && self.assignments(a).next().is_some()
            && self.every_assignment(b, |built| {
                built.closed
                    && !built.parts.is_empty()
                    && built
                        .parts
                        .iter()
                        .all(|m| self.assignments(a).all(|over| over.models.contains(m)))
            })
    }

    /// What each assignment of `optimizer` (by its exact name) builds it
    /// over.
    fn assignments<'r, 'o>(
        &'r self,
        optimizer: &'o str,
    ) -> impl Iterator<Item = &'r Built> + use<'r, 'o> {
        self.optimizers
            .iter()
            .filter(move |(o, _)| o == optimizer)
            .map(|(_, built)| built)
    }

    /// Whether `optimizer` is assigned, and every assignment holds `test`.
    fn every_assignment(&self, optimizer: &str, test: impl Fn(&Built) -> bool) -> bool {
        let mut all = self.assignments(optimizer).peekable();
        all.peek().is_some() && all.all(test)
    }

    /// Whether every assignment of `optimizer` builds it over tensors
    /// taken by name only (`Adam([self.log_alpha])`).
    pub fn over_tensors_only(&self, optimizer: &str) -> bool {
        self.every_assignment(optimizer, |b| {
            !b.tensors.is_empty() && b.tensors.len() == b.models.len()
        })
    }

    /// The pass whose backward call is at `span`.
    pub fn pass_at(&self, span: Span) -> Option<&Pass> {
        self.passes.iter().find(|p| p.span == span)
    }

    /// The models every assignment of `optimizer` (by its exact name)
    /// builds it over; empty when unknown or when assignments disagree.
    pub fn models_of(&self, optimizer: &str) -> Vec<String> {
        let mut all = self.assignments(optimizer);
        let Some(first) = all.next() else {
            return Vec::new();
        };
        let mut models = first.models.clone();
        for b in all {
            models.retain(|m| b.models.contains(m));
        }
        models
    }

    /// The whole models every assignment of `optimizer` builds it over,
    /// when they all agree and it takes nothing else (no subset of a
    /// model, no other tensors).
    pub fn whole_models(&self, optimizer: &str) -> Option<&[String]> {
        let mut built = self.assignments(optimizer);
        let first = built.next()?;
        let whole =
            |b: &Built| b.exact && b.closed && b.parts == b.models && b.models == first.models;
        (!first.models.is_empty() && whole(first) && built.all(whole))
            .then_some(first.models.as_slice())
    }

    /// Whether `optimizer` is known to take only the parameters of models
    /// unrelated to `model` (neither is the other or a part of it).
    pub fn only_other_models(&self, optimizer: &str, model: &str) -> bool {
        self.every_assignment(optimizer, |b| {
            b.closed && !b.parts.is_empty() && b.parts.iter().all(|m| !related(m, model))
        })
    }

    /// Whether `pass` goes through one of the models every assignment of
    /// `optimizer` builds it over ([`Reach::pass_reaches`]).
    pub fn pass_reaches_optimizer(&self, pass: &Pass, optimizer: &str) -> bool {
        let theirs = self.models_of(optimizer);
        theirs.iter().any(|m| self.pass_reaches(pass, m, &theirs))
    }

    /// Whether `pass` goes through `model`, one of the models `built` an
    /// optimizer is built over: a call of it or of a part of it, or of a
    /// model it is a part of, when the optimizer takes two or more of its
    /// parts (a forward pass uses some of them) or unless
    /// [`Reach::parts_unreached`].
    pub fn pass_reaches(&self, pass: &Pass, model: &str, built: &[String]) -> bool {
        self.reaches_among(&pass.calls, model, built)
    }

    /// [`Reach::pass_reaches`], not through a module's function only.
    pub fn pass_reaches_directly(&self, pass: &Pass, model: &str, built: &[String]) -> bool {
        self.reaches_among(&pass.direct, model, built)
    }

    fn reaches_among(&self, calls: &[String], model: &str, built: &[String]) -> bool {
        calls.iter().any(|c| {
            c == model
                || attribute_of(c, model)
                || attribute_of(model, c)
                    && (!self.parts_unreached
                        || built.iter().filter(|m| attribute_of(m, c)).count() >= 2)
        })
    }

    /// Whether the file may freeze `model`'s parameters: the model, or
    /// what holds it. A frozen part of it (`net_d.backbone`) leaves the
    /// rest to receive gradients; `net_d.module` is the whole of a wrapped
    /// model.
    pub fn may_freeze(&self, model: &str) -> bool {
        self.freezes_unnamed
            || self.frozen.iter().any(|f| {
                let f = f.strip_suffix(".module").unwrap_or(f);
                related(f, model) && !attribute_of(f, model)
            })
    }
}

/// Whether two model expressions may share parameters: the same, one a part
/// of the other (`model`, `model.disc`), or the same last name
/// (`self.net_d`, `net_d`).
pub fn related(a: &str, b: &str) -> bool {
    let last = |s: &str| s.rsplit('.').next().unwrap_or(s).to_string();
    a == b || attribute_of(a, b) || attribute_of(b, a) || last(a) == last(b)
}

/// Whether `name` is an attribute (at any depth) of `object`: `opt.state`
/// and `opt.state.step` of `opt` (`name` starts with `object.`).
pub fn attribute_of(name: &str, object: &str) -> bool {
    name.len() > object.len() && name.starts_with(object) && name.as_bytes()[object.len()] == b'.'
}

/// A method a class of the file inherits from a class of another file: the
/// copy `class.method` runs `from.method` with `self` an instance of
/// `class`, whose overrides its calls on `self` reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    /// The class of the file (`DdpTrainer`).
    pub class: String,
    /// The method's name (`train_epoch`).
    pub method: String,
    /// The class of another file defining it (`3::Trainer`).
    pub from: String,
}

impl Program {
    /// The function called `name` (`Class.method` or a bare name), if
    /// defined: a qualified name must match exactly; a bare one matches a
    /// function of that name, else the first method of that name.
    pub fn function(&self, name: &str) -> Option<&Function> {
        if name.contains("::") {
            return self.imported.as_ref()?.get(name);
        }
        self.functions.iter().find(|f| f.name == name).or_else(|| {
            if name.contains('.') {
                return None;
            }
            self.functions
                .iter()
                .find(|f| f.name.rsplit('.').next() == Some(name))
        })
    }

    /// The model an optimizer updates, if known.
    pub fn model_of(&self, optimizer: &str) -> Option<&str> {
        self.optimizer_models
            .iter()
            .find(|(o, _)| same_name(o, optimizer))
            .map(|(_, m)| m.as_str())
    }
}

/// Whether two expressions name the same object: equal, or one is a bare
/// name equal to the other's last segment (`self.optimizer` and a parameter
/// `optimizer`). `gen.optimizer` and `disc.optimizer` are different objects.
pub fn same_name(a: &str, b: &str) -> bool {
    // A reset of the optimizers a loop runs over: `opt_g|opt_d`, or
    // `X[*]` for each held in `X` (`X["d"]`, `X[0]`, `X.d`).
    if a.contains('|') || a.ends_with("[*]") {
        return a.split('|').any(|alt| match alt.strip_suffix("[*]") {
            Some(container) => b
                .char_indices()
                .filter(|&(_, c)| c == '[' || c == '.')
                .any(|(i, _)| same_name(container, &b[..i])),
            None => same_name(alt, b),
        });
    }
    if b.contains('|') || b.ends_with("[*]") {
        return same_name(b, a);
    }
    let last = |s: &str| s.rsplit('.').next().unwrap_or(s).to_string();
    a == b || ((!a.contains('.') || !b.contains('.')) && last(a) == last(b))
}
