//! How much a finding rests on: the analysis reads what it cannot know one
//! way (a call it cannot see into does nothing to gradients, a test it
//! cannot classify can go either way, a method named `train_step` runs once
//! per batch, a file that mentions DeepSpeed drives its engine). Each
//! finding is checked against the same program with each such reading
//! turned the other way: a finding that survives every turn rests on no
//! guess (`high`); one that disappears under one turn rests on that guess
//! (`medium`), under two or more (`low`). Readings that keep the analysis
//! silent (a call handed an optimizer might be its step) are turned too,
//! and what appears only then is reported at `low`.
//!
//! Only files with a finding, or with a silent reading to turn, pay for the
//! extra runs of the rules; each is one more run over the lowered file.

use serde::Serialize;

use crate::ir::{CondClass, Event, Node, Program, Reset, Span, Updater, FOREIGN_BASE};

/// The tiers, as `gradlint rule CODE` ends its page.
pub const TIERS: &str = r#"## Confidence
Every finding has a confidence. `high`: it holds whichever way every call
gradlint cannot see into and every test it cannot classify goes (the
default output shows only these). `medium`: it rests on one guess (a call
handed the optimizer, the model or `self` read as not resetting; a test
read as able to go either way; a method run once per batch by its name;
DeepSpeed read from the file's text; a loss through a whole model read as
reaching the optimizer built over one part of it). `low`: two or more guesses, or a
finding that appears only when a reading that keeps gradlint silent is
turned around (a call handed the optimizer read as its step). Widen with
`--confidence medium|low|all` (or `confidence = "medium"` in
`[tool.gradlint]`); the text output names each guess under the finding,
JSON and SARIF carry `confidence` and `assumptions`.
"#;

/// How sure a finding is: what it rests on beyond the code it can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Rests on two or more guesses, or appears only when a reading that
    /// keeps the analysis silent is turned around.
    Low,
    /// Rests on one guess.
    Medium,
    /// Rests on no guess: it holds whichever way every call the analysis
    /// cannot see and every test it cannot classify goes.
    High,
}

impl Confidence {
    /// `high`, `medium`, `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

impl std::str::FromStr for Confidence {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "high" => Ok(Confidence::High),
            "medium" => Ok(Confidence::Medium),
            "low" | "all" => Ok(Confidence::Low),
            other => Err(format!(
                "unknown confidence `{other}` (high, medium, low or all)"
            )),
        }
    }
}

/// What kind of guess a finding rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A call the analysis cannot see into, handed an optimizer, a model
    /// or `self`, read as doing nothing to gradients.
    OpaqueCall,
    /// The same, read as a step of the optimizer it is handed (a finding
    /// that appears only then).
    OpaqueStep,
    /// A test the analysis cannot classify, or a flag it takes as an
    /// independent setting, read as able to go either way.
    UnclassifiedCondition,
    /// A method read as run once per batch because of its name.
    PerBatchName,
    /// A framework read from the file's text (DeepSpeed).
    FrameworkFlag,
    /// A model's reset read as not clearing an optimizer's parameters
    /// because their names differ (`D.zero_grad()` in a helper handed the
    /// discriminator, whose optimizer was built over `discriminator`).
    ModelName,
    /// A loss through a whole model read as reaching the optimizer built
    /// over a part of it.
    ModelPart,
    /// A loop over `range(n)`, `n` a setting (`range(gen_iters)`), read as
    /// running more than once: a reset in it then cuts what its passes
    /// gather for a step after it (GL004).
    RunLength,
}

impl Kind {
    /// `opaque-call`, ... (as in JSON and SARIF).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OpaqueCall => "opaque-call",
            Kind::OpaqueStep => "opaque-step",
            Kind::UnclassifiedCondition => "unclassified-condition",
            Kind::PerBatchName => "per-batch-name",
            Kind::FrameworkFlag => "framework-flag",
            Kind::ModelName => "model-name",
            Kind::ModelPart => "model-part",
            Kind::RunLength => "run-length",
        }
    }
}

/// One guess a finding rests on, before it is placed in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guess {
    /// Its kind.
    pub kind: Kind,
    /// Where it was made (the call, the test, the function), if anywhere.
    pub span: Option<Span>,
    /// What was read, in words; `{}` stands for the source text at `span`.
    pub note: String,
}

/// What a finding of the default reading rests on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Weight {
    /// The guesses that, turned, make it disappear.
    pub guesses: Vec<Guess>,
}

impl Weight {
    /// The confidence these guesses leave.
    pub fn confidence(&self) -> Confidence {
        match self.guesses.len() {
            0 => Confidence::High,
            1 => Confidence::Medium,
            _ => Confidence::Low,
        }
    }
}

/// A finding's identity across runs: its rule and where it points.
pub type Key = (&'static str, Span);

/// One reading turned the other way.
#[derive(Debug, Clone)]
enum Turn {
    /// These opaque calls (by span; all when empty... never empty) clear
    /// every gradient.
    OpaqueResets(Vec<Span>),
    /// Every opaque call handed an optimizer steps it.
    OpaqueSteps,
    /// The `if` at this span always runs this branch (`None`: none).
    Force(Span, Option<usize>),
    /// The same, weighed only for GL004: a test the loop computes, read as
    /// a window's boundary where it may be a skip (a step left out when a
    /// value is bad, a stage that freezes the model).
    ForceWindow(Span, Option<usize>),
    /// The function whose body became a loop at this span is not run
    /// once per batch.
    NotPerBatch(Span),
    /// The file does (not) drive a DeepSpeed engine.
    DeepSpeed(bool),
    /// accelerate's window is one: `accelerator.accumulate` gates nothing.
    AccelerateWindowOne,
    /// A pass through two models whose optimizers were reset together is
    /// meant for both.
    JointLoss,
    /// A pass through a whole model does not reach a part of it.
    PartsUnreached,
    /// A pass is the optimizer's its loss is named for.
    LossNames,
    /// The loop at this span runs once.
    RunsOnce(Span),
    /// The resets of this model (not one an optimizer of the file is built
    /// over) also clear these models (those optimizers are built over).
    ModelResetsAll(String, Vec<String>),
}

/// Most extra runs of the rules for one file; past it the readings not
/// turned count as guesses of the findings they could touch.
const MAX_TURNS: usize = 96;
/// Opaque calls turned one by one; past it, together.
const MAX_SINGLE_OPAQUE: usize = 16;

/// One program's findings, each with its key, given which of its
/// functions may differ from the weighed program's (by index; `None`: all).
pub type Run<'r, T> = dyn Fn(&Program, Option<&[bool]>) -> Vec<(Key, T)> + 'r;

/// Weighs the findings `base` that `run` reports on `program`, and finds
/// those that appear only when a silent reading is turned: returns a weight
/// per finding of `base` (same order) and the extra findings (with what
/// they rest on). `run` reports one program's findings, each with its key;
/// it is told which functions the turn may have changed (by index; `None`:
/// all), the others' findings being those of `program`. `turn_silent`:
/// whether to turn the readings that keep the analysis silent (no extra
/// findings otherwise).
pub fn weigh<T>(
    program: &Program,
    base: &[Key],
    run: &Run<T>,
    turn_silent: bool,
) -> (Vec<Weight>, Vec<(T, Weight)>) {
    let mut weights = vec![Weight::default(); base.len()];
    let mut extra: Vec<(Key, T, Weight)> = Vec::new();
    let opaque = opaque_calls(program);

    // Readings that keep the analysis silent, turned: what appears is new.
    let mut silent = Vec::new();
    if opaque.iter().any(|(_, handed)| *handed) {
        silent.push((
            Turn::OpaqueSteps,
            Guess {
                kind: Kind::OpaqueStep,
                span: None,
                note:
                    "a call the analysis cannot see into, handed the optimizer, is read as its step"
                        .into(),
            },
        ));
    }
    if program.deepspeed {
        silent.push((Turn::DeepSpeed(false), deepspeed_guess()));
    }
    // Several optimizers' passes between their resets and their steps
    // (`opt_g.zero_grad(); opt_d.zero_grad(); g_loss.backward();
    // d_loss.backward(); opt_g.step(); opt_d.step()`): whose pass is whose
    // only the losses' names tell, or which model only one pass feeds.
    if program.reach.passes.len() >= 2 && program.reach.optimizers.len() >= 2 {
        silent.push((
            Turn::LossNames,
            Guess {
                kind: Kind::ModelName,
                span: None,
                note: "a backward pass is read as the pass of the optimizer its loss is named for, or of the one optimizer whose model only it goes through"
                    .into(),
            },
        ));
    }
    // Not shown, not looked for.
    if !turn_silent {
        silent.clear();
    }
    for (turn, guess) in silent {
        let turned = apply(program, &turn);
        let changed = changed_functions(program, &turned, &turn);
        for (key, item) in run(&turned, changed.as_deref()) {
            if base.contains(&key) || extra.iter().any(|(k, _, _)| *k == key) {
                continue;
            }
            let mut guess = guess.clone();
            if matches!(turn, Turn::OpaqueSteps) && opaque.iter().any(|(s, _)| *s == key.1) {
                guess.span = Some(key.1);
                guess.note = "`{}` is read as a step of the optimizer it is handed".into();
            }
            // Never `high`; `low`, as a finding only a turned reading shows.
            let shown_only = Guess {
                kind: guess.kind,
                span: None,
                note: "found only when that reading is turned around".into(),
            };
            extra.push((
                key,
                item,
                Weight {
                    guesses: vec![guess, shown_only],
                },
            ));
        }
    }
    let extra: Vec<(T, Weight)> = extra.into_iter().map(|(_, t, w)| (t, w)).collect();
    if base.is_empty() {
        return (weights, extra);
    }

    // Readings the findings may rest on, turned one at a time: those of
    // the functions the findings lie in and the functions they call.
    let relevant = relevant_functions(program, base);
    let opaque: Vec<(Span, bool)> = opaque_calls_in(program, &relevant);
    let mut turns: Vec<(Turn, Guess)> = Vec::new();
    if opaque.len() <= MAX_SINGLE_OPAQUE {
        for (span, _) in &opaque {
            turns.push((
                Turn::OpaqueResets(vec![*span]),
                Guess {
                    kind: Kind::OpaqueCall,
                    span: Some(*span),
                    note: "`{}` is read as not resetting the gradients".into(),
                },
            ));
        }
    } else {
        turns.push((
            Turn::OpaqueResets(opaque.iter().map(|(s, _)| *s).collect()),
            Guess {
                kind: Kind::OpaqueCall,
                span: None,
                note: format!(
                    "{} calls the analysis cannot see into are read as not resetting the gradients",
                    opaque.len()
                ),
            },
        ));
    }
    let leaves = leaving_branches(program);
    let unclassified = unclassified_ifs(program, &relevant, false);
    for &(at, branches, exhaustive) in &unclassified {
        let guess = Guess {
            kind: Kind::UnclassifiedCondition,
            span: Some(at),
            note: "the test `{}` is read as able to go either way".into(),
        };
        for turn in forcings(at, branches, exhaustive, &leaves, Turn::Force) {
            turns.push((turn, guess.clone()));
        }
    }
    if base.iter().any(|(code, _)| *code == "GL004") {
        for (at, branches, exhaustive) in unclassified_ifs(program, &relevant, true) {
            if unclassified.iter().any(|(s, _, _)| *s == at) {
                continue;
            }
            let guess = Guess {
                kind: Kind::UnclassifiedCondition,
                span: Some(at),
                note: "the test `{}`, computed in the loop, is read as a window's boundary, not a skip".into(),
            };
            for turn in forcings(at, branches, exhaustive, &leaves, Turn::ForceWindow) {
                turns.push((turn, guess.clone()));
            }
        }
    }
    let mut known_models: Vec<String> = Vec::new();
    for (_, m) in &program.optimizer_models {
        if !known_models.contains(m) {
            known_models.push(m.clone());
        }
    }
    for model in unknown_model_resets(program, &relevant) {
        turns.push((
            Turn::ModelResetsAll(model.clone(), known_models.clone()),
            Guess {
                kind: Kind::ModelName,
                span: None,
                note: format!(
                    "`{model}.zero_grad()` is read as not clearing the parameters of optimizers built over models of other names"
                ),
            },
        ));
    }
    for (span, name) in &program.per_batch_by_name {
        // A call of it inside a loop of the file is evidence, not a guess.
        if called_in_a_loop(program, name) {
            continue;
        }
        turns.push((
            Turn::NotPerBatch(*span),
            Guess {
                kind: Kind::PerBatchName,
                span: None,
                note: format!("`{name}` is read as run once per batch, because of its name"),
            },
        ));
    }
    if program.deepspeed {
        turns.push((Turn::DeepSpeed(false), deepspeed_guess()));
    }
    if program.accelerate_window_unset || !program.accelerate_unset_files.is_empty() {
        turns.push((
            Turn::AccelerateWindowOne,
            Guess {
                kind: Kind::FrameworkFlag,
                span: None,
                note: "accelerate is read as accumulating over several micro-steps, though its \
                       `Accelerator` is built with no `gradient_accumulation_steps` (a window of \
                       one unless a launch config sets one)"
                    .into(),
            },
        ));
    }
    if base.iter().any(|(code, _)| *code == "GL009") {
        turns.push((
            Turn::JointLoss,
            Guess {
                kind: Kind::ModelName,
                span: None,
                note: "a loss through both models, after both optimizers were reset together, is read as stray, not as meant for both".into(),
            },
        ));
        turns.push((
            Turn::PartsUnreached,
            Guess {
                kind: Kind::ModelPart,
                span: None,
                note: "a loss computed through a whole model is read as reaching the optimizer built over a part of it".into(),
            },
        ));
    }

    if base.iter().any(|(code, _)| *code == "GL004") {
        // Loops whose passes are for a step after them (a step inside is
        // a window the loop's counter keeps).
        let stepless = program.settable_runs.iter().filter(|s| {
            !program
                .functions
                .iter()
                .any(|f| steps_in_loop(&f.body, **s))
        });
        for span in stepless {
            turns.push((
                Turn::RunsOnce(*span),
                Guess {
                    kind: Kind::RunLength,
                    span: Some(*span),
                    note: "the loop over a setting's range is read as running more than once"
                        .into(),
                },
            ));
        }
    }

    let untried = turns.len().saturating_sub(MAX_TURNS);
    for (turn, guess) in turns.into_iter().take(MAX_TURNS) {
        let turned = apply(program, &turn);
        let changed = changed_functions(program, &turned, &turn);
        let found: Vec<Key> = run(&turned, changed.as_deref())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let anchors =
            matches!(turn, Turn::Force(..) | Turn::ForceWindow(..)).then(|| event_spans(&turned));
        for (i, key) in base.iter().enumerate() {
            // A run of one is a guess of the windows it holds (GL004), for
            // the innermost such loop around the reset: piling up across
            // a loop's runs is what the loop is for.
            if matches!(turn, Turn::ForceWindow(..)) && key.0 != "GL004" {
                continue;
            }
            if let Turn::RunsOnce(run) = turn {
                let innermost = program
                    .settable_runs
                    .iter()
                    .filter(|r| r.contains(key.1))
                    .min_by_key(|r| r.end - r.start);
                if key.0 != "GL004" || innermost != Some(&run) {
                    continue;
                }
            }
            // Still a pile-up at the same step under another rule (a call
            // before the loop read as a reset turns GL001 into GL002): the
            // finding's claim holds.
            if found.contains(key)
                || found
                    .iter()
                    .any(|k| k.1 == key.1 && piles_up(k.0) && piles_up(key.0))
            {
                continue;
            }
            // A forced branch that drops the finding's own event says
            // nothing of it.
            if anchors
                .as_ref()
                .is_some_and(|a| key.1.start < FOREIGN_BASE && !a.contains(&key.1))
            {
                continue;
            }
            if !weights[i].guesses.contains(&guess) {
                weights[i].guesses.push(guess.clone());
            }
        }
    }
    if untried > 0 {
        for w in &mut weights {
            w.guesses.push(Guess {
                kind: Kind::UnclassifiedCondition,
                span: None,
                note: format!("{untried} more readings of the file were not checked"),
            });
        }
    }
    (weights, extra)
}

/// The turns that force the `if` at `at` down each of its branches, and
/// past them all when it has no `else`. A branch that leaves the iteration
/// (`if done: break`, `if bad: continue`) is a guard: taking it every time
/// would leave a loop that does nothing, a world not worth a guess.
fn forcings(
    at: Span,
    branches: usize,
    exhaustive: bool,
    leaves: &std::collections::HashMap<(Span, usize), bool>,
    force: fn(Span, Option<usize>) -> Turn,
) -> Vec<Turn> {
    let mut out: Vec<Turn> = (0..branches)
        .filter(|b| !leaves.get(&(at, *b)).copied().unwrap_or(false))
        .map(|b| force(at, Some(b)))
        .collect();
    if !exhaustive {
        out.push(force(at, None));
    }
    out
}

/// Whether the loop at `span` among `nodes` (nested ones included) has a
/// step in it.
fn steps_in_loop(nodes: &[Node], span: Span) -> bool {
    fn has_step(nodes: &[Node]) -> bool {
        nodes.iter().any(|n| match n {
            Node::Event(Event::Step(_), _) => true,
            Node::Loop { body, .. } | Node::Accumulate(body) => has_step(body),
            Node::If { branches, .. } => branches.iter().any(|b| has_step(b)),
            _ => false,
        })
    }
    nodes.iter().any(|n| match n {
        Node::Loop { span: s, body, .. } if *s == span => has_step(body),
        Node::Loop { body, .. } | Node::Accumulate(body) => steps_in_loop(body, span),
        Node::If { branches, .. } => branches.iter().any(|b| steps_in_loop(b, span)),
        _ => false,
    })
}

/// The rules whose finding says gradients pile up at a step for want of a
/// reset in the loop.
fn piles_up(code: &str) -> bool {
    matches!(code, "GL001" | "GL002" | "GL005")
}

fn deepspeed_guess() -> Guess {
    Guess {
        kind: Kind::FrameworkFlag,
        span: None,
        note: "the file is read as driving a DeepSpeed engine, from its text".into(),
    }
}

/// The functions of `turned` (`program` with `turn` applied) whose
/// findings may differ from `program`'s: those whose bodies the turn
/// rewrote and those that call them, however deep. `None` for a turn of a
/// reading of the whole file (every function may differ).
fn changed_functions(program: &Program, turned: &Program, turn: &Turn) -> Option<Vec<bool>> {
    if matches!(
        turn,
        Turn::DeepSpeed(_)
            | Turn::AccelerateWindowOne
            | Turn::JointLoss
            | Turn::PartsUnreached
            | Turn::LossNames
    ) || program.functions.len() != turned.functions.len()
    {
        return None;
    }
    let mut changed: Vec<bool> = program
        .functions
        .iter()
        .zip(&turned.functions)
        .map(|(a, b)| a.body != b.body)
        .collect();
    // Each function's callees, resolved as the graphs resolve them.
    let callees: Vec<Vec<usize>> = turned
        .functions
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            visit(&f.body, &mut |node| {
                if let Node::Event(Event::Call(name), _) = node {
                    let target = name.split_once('|').map_or(name.as_str(), |(t, _)| t);
                    let callee = turned
                        .function(target)
                        .and_then(|g| turned.functions.iter().position(|h| std::ptr::eq(g, h)));
                    out.extend(callee);
                }
            });
            out
        })
        .collect();
    let mut grew = true;
    while grew {
        grew = false;
        for i in 0..changed.len() {
            if !changed[i] && callees[i].iter().any(|&j| changed[j]) {
                changed[i] = true;
                grew = true;
            }
        }
    }
    Some(changed)
}

/// The program with one reading turned.
fn apply(program: &Program, turn: &Turn) -> Program {
    let mut out = program.clone();
    match turn {
        Turn::DeepSpeed(on) => out.deepspeed = *on,
        Turn::AccelerateWindowOne => out.accelerate_window_one = true,
        Turn::JointLoss => out.reach.joint_loss_shared = true,
        Turn::PartsUnreached => out.reach.parts_unreached = true,
        Turn::LossNames => out.reach.losses_named = true,
        _ => {
            for f in &mut out.functions {
                f.body = rewrite(&f.body, turn);
            }
        }
    }
    out
}

fn rewrite(nodes: &[Node], turn: &Turn) -> Vec<Node> {
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        match (node, turn) {
            (Node::Opaque(o), Turn::OpaqueResets(spans)) if spans.contains(&o.span) => {
                out.push(Node::Event(Event::Reset(Reset::Parameters), o.span));
            }
            (
                Node::Event(Event::Reset(Reset::Model(m)), at),
                Turn::ModelResetsAll(model, known),
            ) if m == model => {
                out.push(node.clone());
                for k in known {
                    out.push(Node::Event(Event::Reset(Reset::Model(k.clone())), *at));
                }
            }
            (Node::Opaque(o), Turn::OpaqueSteps) => {
                for opt in &o.optimizers {
                    out.push(Node::Event(
                        Event::Step(Updater::Optimizer(opt.clone())),
                        o.span,
                    ));
                }
            }
            (
                Node::If { at, branches, .. },
                Turn::Force(s, which) | Turn::ForceWindow(s, which),
            ) if at == s => {
                if let Some(b) = which {
                    out.extend(rewrite(&branches[*b], turn));
                }
            }
            (Node::Loop { span, body, .. }, Turn::NotPerBatch(s) | Turn::RunsOnce(s))
                if span == s =>
            {
                out.extend(rewrite(body, turn));
            }
            (
                Node::If {
                    branches,
                    exhaustive,
                    tests,
                    at,
                },
                _,
            ) => out.push(Node::If {
                branches: branches.iter().map(|b| rewrite(b, turn)).collect(),
                exhaustive: *exhaustive,
                tests: tests.clone(),
                at: *at,
            }),
            (
                Node::Loop {
                    body,
                    span,
                    assigned,
                    counters,
                },
                _,
            ) => out.push(Node::Loop {
                body: rewrite(body, turn),
                span: *span,
                assigned: assigned.clone(),
                counters: counters.clone(),
            }),
            (Node::Accumulate(body), _) => out.push(Node::Accumulate(rewrite(body, turn))),
            (other, _) => out.push(other.clone()),
        }
    }
    out
}

/// Every opaque call of the program's functions, and whether it is handed
/// an optimizer.
fn opaque_calls(program: &Program) -> Vec<(Span, bool)> {
    opaque_calls_in(program, &vec![true; program.functions.len()])
}

/// The opaque calls of the functions `relevant` marks.
fn opaque_calls_in(program: &Program, relevant: &[bool]) -> Vec<(Span, bool)> {
    let mut out = Vec::new();
    let functions = program.functions.iter().zip(relevant).filter(|(_, r)| **r);
    for (f, _) in functions {
        visit(&f.body, &mut |n| {
            if let Node::Opaque(o) = n {
                if !out.iter().any(|(s, _)| *s == o.span) {
                    out.push((o.span, !o.optimizers.is_empty()));
                }
            }
        });
    }
    out
}

/// The `if`s whose tests the analysis could not (wholly) classify and
/// whose branches touch gradients or the path (events, calls, jumps): their
/// span, branch count and whether one branch always runs.
fn unclassified_ifs(
    program: &Program,
    relevant: &[bool],
    computed: bool,
) -> Vec<(Span, usize, bool)> {
    let objects = event_objects(program);
    let mut out = Vec::new();
    let functions = program.functions.iter().zip(relevant).filter(|(_, r)| **r);
    let within = Within {
        objects: &objects,
        computed,
    };
    for (f, _) in functions {
        guessed_ifs(&f.body, &f.assigned, &within, &mut out);
    }
    out
}

/// What counts as a guess in [`guessed_ifs`].
struct Within<'o> {
    /// The objects the events act on.
    objects: &'o [String],
    /// Whether a flag whose names the loop or the function assigns is a
    /// guess too (for GL004, whose claim is that the test is a window).
    computed: bool,
}

/// The models reset in the relevant functions that no optimizer of the
/// file is known to be built over (a helper's parameter `D`).
fn unknown_model_resets(program: &Program, relevant: &[bool]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let functions = program.functions.iter().zip(relevant).filter(|(_, r)| **r);
    for (f, _) in functions {
        visit(&f.body, &mut |node| {
            if let Node::Event(Event::Reset(Reset::Model(m)), _) = node {
                let known = program
                    .optimizer_models
                    .iter()
                    .any(|(_, model)| crate::ir::same_name(model, m));
                if !known && !out.contains(m) {
                    out.push(m.clone());
                }
            }
        });
    }
    out
}

/// Whether a function or method called `name` (`Class.method`) is called
/// inside a loop of the file.
fn called_in_a_loop(program: &Program, name: &str) -> bool {
    if program.called_from_loops.iter().any(|c| c == name) {
        return true;
    }
    let method = name.rsplit('.').next().unwrap_or(name);
    program
        .functions
        .iter()
        .filter(|f| f.name != name)
        .any(|f| {
            let mut calls = Vec::new();
            crate::ir::calls_in_loops(&f.body, &[], &mut calls);
            calls
                .iter()
                .any(|c| c.rsplit('.').next().unwrap_or(c) == method)
        })
}

/// The functions a finding may owe something to: those whose code holds a
/// finding's event, and the functions of the file they call (transitively).
fn relevant_functions(program: &Program, base: &[Key]) -> Vec<bool> {
    let n = program.functions.len();
    let mut relevant = vec![false; n];
    let mut stack = Vec::new();
    for (i, f) in program.functions.iter().enumerate() {
        let mut holds = false;
        visit(&f.body, &mut |node| match node {
            Node::Event(_, s) | Node::Loop { span: s, .. } => {
                holds |= base.iter().any(|(_, b)| b == s || s.contains(*b));
            }
            _ => {}
        });
        if holds {
            relevant[i] = true;
            stack.push(i);
        }
    }
    while let Some(i) = stack.pop() {
        visit(&program.functions[i].body, &mut |node| {
            if let Node::Event(Event::Call(name), _) = node {
                let callee = program.functions.iter().position(|f| {
                    f.name == *name || f.name.rsplit('.').next() == name.rsplit('.').next()
                });
                if let Some(j) = callee.filter(|&j| !relevant[j]) {
                    relevant[j] = true;
                    stack.push(j);
                }
            }
        });
    }
    relevant
}

/// The objects the file's events act on (`opt` of `opt.step()`, `net` of
/// `net.zero_grad()`): a test of whether one of them exists (`if opt:`)
/// depends on how the program was set up, not on a setting.
fn event_objects(program: &Program) -> Vec<String> {
    let mut out = Vec::new();
    for f in &program.functions {
        visit(&f.body, &mut |node| {
            let name = match node {
                Node::Event(Event::Step(Updater::Optimizer(o) | Updater::Tensor(o)), _) => o,
                Node::Event(
                    Event::Reset(Reset::Optimizer(o) | Reset::Model(o) | Reset::Tensor(o)),
                    _,
                ) => o,
                _ => return,
            };
            if !out.contains(name) {
                out.push(name.clone());
            }
        });
    }
    out
}

/// The guessed `if`s of `nodes`; `varying` names what the enclosing loops
/// (or the function) assign.
fn guessed_ifs(
    nodes: &[Node],
    varying: &[String],
    within: &Within,
    out: &mut Vec<(Span, usize, bool)>,
) {
    for n in nodes {
        match n {
            Node::If {
                branches,
                exhaustive,
                tests,
                at,
            } => {
                let unknown = tests.iter().enumerate().any(|(i, t)| {
                    // An `else` tells nothing by design.
                    let is_else = *exhaustive && i + 1 == tests.len() && i > 0;
                    !is_else
                        && (guessed(&t.holds, varying, within)
                            || guessed(&t.fails, varying, within))
                });
                if unknown
                    && branches.iter().any(|b| matters(b))
                    && !out.iter().any(|(s, _, _)| s == at)
                {
                    out.push((*at, branches.len(), *exhaustive));
                }
                for b in branches {
                    guessed_ifs(b, varying, within, out);
                }
            }
            Node::Loop { body, assigned, .. } => {
                let mut inner = varying.to_vec();
                inner.extend(assigned.iter().cloned());
                guessed_ifs(body, &inner, within, out);
            }
            Node::Accumulate(body) => guessed_ifs(body, varying, within, out),
            _ => {}
        }
    }
}

/// Whether one side of a test rests on a guess: an alternative that knows
/// nothing, or one that only tests whether objects the events act on exist
/// (`if self.net:`, `if opt is not None:`, names nothing around assigns):
/// the analysis takes such tests as independent, where the program's setup
/// ties them together. A setting (`if args.amp:`) is no guess: a bug under
/// one value of it is a bug.
fn guessed(side: &[Vec<crate::ir::Test>], varying: &[String], within: &Within) -> bool {
    let fixed = |r: &String| !varying.contains(r);
    let object = |r: &String| within.objects.iter().any(|o| crate::ir::same_name(o, r));
    side.iter().any(|alternative| {
        alternative.is_empty()
            || alternative.iter().all(|t| match &t.cond.class {
                CondClass::Flag(reads) if within.computed && !reads.iter().all(fixed) => true,
                CondClass::Flag(reads) => reads.iter().all(fixed) && reads.iter().any(object),
                CondClass::NotNone(name) => fixed(name),
                // Known to be one value within an iteration, not which.
                CondClass::Bound => true,
                _ => false,
            })
    })
}

/// Per `if` (by span) and branch, whether the branch ends by leaving the
/// iteration or the function (`break`, `continue`, `return`, `raise`).
fn leaving_branches(program: &Program) -> std::collections::HashMap<(Span, usize), bool> {
    let mut out = std::collections::HashMap::new();
    for f in &program.functions {
        visit(&f.body, &mut |n| {
            if let Node::If { branches, at, .. } = n {
                for (i, b) in branches.iter().enumerate() {
                    out.insert((*at, i), crate::ir::leaves(b));
                }
            }
        });
    }
    out
}

/// Whether nodes hold anything the rules read (not only quiet code).
fn matters(nodes: &[Node]) -> bool {
    let mut found = false;
    visit(nodes, &mut |n| {
        found |= matches!(
            n,
            Node::Event(..)
                | Node::Opaque(_)
                | Node::Break
                | Node::Continue
                | Node::Return
                | Node::Raise
                | Node::Set(..)
        );
    });
    found
}

/// The spans of every event of the program's functions.
fn event_spans(program: &Program) -> Vec<Span> {
    let mut out = Vec::new();
    for f in &program.functions {
        visit(&f.body, &mut |n| match n {
            Node::Event(_, s) => out.push(*s),
            Node::Loop { span, .. } => out.push(*span),
            _ => {}
        });
    }
    out
}

/// Calls `f` on every node, depth first.
fn visit(nodes: &[Node], f: &mut dyn FnMut(&Node)) {
    for n in nodes {
        f(n);
        match n {
            Node::If { branches, .. } => branches.iter().for_each(|b| visit(b, f)),
            Node::Loop { body, .. } | Node::Accumulate(body) => visit(body, f),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Confidence;
    use crate::{lint_source, Language};

    /// The findings of a Python snippet: (code, confidence, kinds of guesses).
    fn weighed(source: &str) -> Vec<(&'static str, Confidence, Vec<&'static str>)> {
        lint_source("t.py", source, Language::Python)
            .unwrap()
            .into_iter()
            .map(|d| {
                let kinds = d.assumptions.iter().map(|a| a.kind).collect();
                (d.code, d.confidence, kinds)
            })
            .collect()
    }

    #[test]
    fn a_finding_on_visible_code_alone_is_high() {
        let found = weighed(
            "for x, y in loader:\n    loss = model(x).sum()\n    loss.backward()\n    opt.step()\n",
        );
        assert_eq!(found, vec![("GL001", Confidence::High, vec![])]);
    }

    #[test]
    fn a_call_handed_the_optimizer_could_reset_it() {
        let found = weighed(
            "for x, y in loader:\n    loss = model(x).sum()\n    loss.backward()\n    opt.step()\n    utils.after_step(opt)\n",
        );
        assert_eq!(
            found,
            vec![("GL001", Confidence::Medium, vec!["opaque-call"])]
        );
    }

    #[test]
    fn a_setting_is_no_guess_but_an_object_test_is() {
        let setting = "for x in loader:\n    if args.reset:\n        opt.zero_grad()\n    model(x).sum().backward()\n    opt.step()\n";
        assert_eq!(weighed(setting), vec![("GL001", Confidence::High, vec![])]);
        let object = "for x in loader:\n    if opt:\n        opt.zero_grad()\n    model(x).sum().backward()\n    opt.step()\n";
        assert_eq!(
            weighed(object),
            vec![("GL001", Confidence::Medium, vec!["unclassified-condition"])]
        );
    }

    #[test]
    fn a_step_gradlint_cannot_see_is_found_at_low() {
        let found =
            weighed("for x in loader:\n    model(x).sum().backward()\n    train_utils.run(opt)\n");
        assert_eq!(
            found,
            vec![("GL001", Confidence::Low, vec!["opaque-step", "opaque-step"])]
        );
    }

    #[test]
    fn tiers_parse_and_order() {
        assert!(Confidence::High > Confidence::Medium && Confidence::Medium > Confidence::Low);
        assert_eq!("all".parse::<Confidence>(), Ok(Confidence::Low));
        assert_eq!("MEDIUM".parse::<Confidence>(), Ok(Confidence::Medium));
        assert!("sure".parse::<Confidence>().is_err());
    }
}
