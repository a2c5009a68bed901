//! What the rules read: for every loop and every updater stepped in it, the
//! facts of its gradient life cycle, computed on the loop's graph.

use std::collections::BTreeSet;

use crate::cfg::{Cfg, Query};
use crate::ir::{
    related, same_name, Counter, Event, Function, Node, Pass, Program, Reset, Span, Updater,
};

/// The facts of one updater in one loop.
#[derive(Debug, Clone)]
pub struct LoopFacts {
    /// The updater (optimizer, manual update, GradStore).
    pub updater: Updater,
    /// The loop.
    pub loop_span: Span,
    /// The receiver of a reset the loop names without calling it
    /// (`optimizer.zero_grad`), of this optimizer or its model.
    pub uncalled_reset: Option<String>,
    /// Its steps in the loop (first one first).
    pub steps: Vec<Span>,
    /// A step after which a path reaches a step again through a backward
    /// pass and no reset: gradients pile up.
    pub pile_up_step: Option<Span>,
    /// The step whose pass the pile-up step applies again (the same step,
    /// a loop later, with one step).
    pub pile_up_from: Option<Span>,
    /// When the pile-up happens only with a window of one: the setting
    /// (`args.gradient_accumulation_steps`) that is then 1.
    pub pile_up_window_of_one: Option<String>,
    /// Steps in other functions the loop calls that pile up too, each a
    /// finding of its own ([`of_function`] gives each its facts).
    pub pile_ups_elsewhere: Vec<Span>,
    /// Resets of this updater's gradients in the loop.
    pub resets_in_loop: Vec<Span>,
    /// Resets in the enclosing function, outside the loop.
    pub resets_outside_loop: Vec<Span>,
    /// How many optimizers the loop steps.
    pub optimizers_in_loop: usize,
    /// Whether the loop resets gradients this updater does not apply (another
    /// optimizer's, another model's).
    pub others_reset_in_loop: bool,
    /// A reset between a backward pass and a step, in one iteration: the
    /// step applies zeros.
    pub reset_between_backward_and_step: Option<Span>,
    /// A reset that discards a backward pass no step applied, while the
    /// step is conditional: accumulation defeated.
    pub reset_discarding_accumulation: Option<Span>,
    /// Rust/candle: a step applying a `GradStore` bound before the loop from
    /// a backward pass and never bound again (nor extended) in it.
    pub stale_store_step: Option<Span>,
    /// Rust/candle: the loop sums backward passes into this `GradStore`.
    pub store_extended_in_loop: bool,
    /// A step that applies, besides its own iteration's gradients, those of
    /// an earlier iteration whose step a skip (`if torch.isnan(loss):
    /// continue`) left out, with no reset in between.
    pub skipped_pass_applied: Option<Span>,
    /// Another optimizer's backward pass whose loss certainly reaches this
    /// optimizer's parameters and is still in them when this optimizer
    /// steps after its own pass (GL009).
    pub stray_pass: Option<StrayPass>,
}

/// A backward pass of another optimizer's loss that this optimizer's step
/// applies: the pass reaches the model this optimizer was built over, after
/// this optimizer's last reset and before its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayPass {
    /// The step that applies it.
    pub step: Span,
    /// The stray backward call.
    pub backward: Span,
    /// Its loss's text (`g_loss`).
    pub loss: String,
    /// The model of this optimizer it reaches (`net_d`).
    pub model: String,
    /// The optimizer whose pass it is (`opt_g`).
    pub other: String,
    /// This optimizer's own backward pass that the stray pass is still
    /// pending at, first on the way to the step (where a reset belongs),
    /// when there is one such pass.
    pub own_backward: Option<Span>,
    /// Whether a reset right before `own_backward` clears nothing of this
    /// optimizer's own passes (none is pending there, in any iteration).
    pub reset_there_is_certain: bool,
    /// Whether the pass is for a tensor updated by hand (`other`, an
    /// attack's `delta`), not for another optimizer.
    pub by_hand: bool,
    /// Whether the stray pass runs after this optimizer's own pass and
    /// before its step, in the same iteration (its reset comes too early
    /// to help: the step belongs before the stray pass).
    pub after_own: bool,
}

/// Whether `event` clears the gradients that `updater` applies.
pub fn resets(program: &Program, event: &Event, updater: &Updater) -> bool {
    let reset = match event {
        Event::Reset(r) => r.clone(),
        Event::BindStore(s) => Reset::Store(s.clone()),
        _ => return false,
    };
    match (&reset, updater) {
        (Reset::Store(a), Updater::Store(b)) => a == b,
        (Reset::Store(_), _) | (_, Updater::Store(_)) => false,
        (Reset::Parameters, _) => true,
        // A tensor updated by hand: its own reset, or its model's.
        (Reset::Tensor(a) | Reset::NewTensor(a), Updater::Tensor(b)) => a == b,
        (Reset::NewTensor(_), _) => false,
        (Reset::Tensor(_), _) => true,
        (Reset::Model(m), Updater::Tensor(t)) => crate::ir::attribute_of(t, m),
        (Reset::Optimizer(_) | Reset::NewOptimizer(_), Updater::Tensor(_)) => false,
        // An object that holds the optimizer it steps (`wrapper.G`, a
        // trainer's `self.opt.gen`): its own `zero_grad()` forwards to
        // what it holds. And a wrapper stepped whose held optimizer is
        // reset (`w._optimizer.zero_grad()`, then `w.step()`): its step
        // forwards to that one. Another optimizer over every model this
        // one takes clears its gradients too.
        (Reset::Optimizer(a), Updater::Optimizer(b)) => {
            // A loop's step of each (`opt|optimizers[*]`): reset by a reset
            // of each, or of its loop variable, not of one of them.
            let b = match b.split_once('|') {
                Some((var, _)) if !a.contains('|') => var,
                _ => b,
            };
            same_name(a, b)
                || program.reach.clears_all_of(a, b)
                || crate::ir::attribute_of(b, a)
                || crate::ir::attribute_of(a, b)
                    && !a[b.len() + 1..].contains('.')
                    && crate::frontend::looks_like_optimizer(a)
        }
        (Reset::NewOptimizer(a), Updater::Optimizer(b)) => same_name(a, b),
        (Reset::NewOptimizer(_), Updater::Manual) => false,
        (Reset::NewModelOptimizer { .. }, _) => false,
        (Reset::Optimizer(_), Updater::Manual) | (Reset::Model(_), Updater::Manual) => true,
        (Reset::Model(_), Updater::Optimizer(o))
            if program.private.iter().any(|p| same_name(p, o)) =>
        {
            false
        }
        (Reset::Model(m), Updater::Optimizer(o)) => {
            // `gen.optimizer` updates `gen`; `self.optimizer` and
            // `self.model` (or, in a method inlined for `trainer`,
            // `trainer.optimizer` and `trainer.model`) are an object's
            // optimizer and model.
            let prefix = o.rsplit_once('.').map(|(prefix, _)| prefix);
            let sibling = prefix.is_some_and(|p| m.rsplit_once('.').is_some_and(|(q, _)| q == p));
            if sibling && program.model_of(o).is_none() {
                return true;
            }
            let owner = prefix.filter(|p| *p != "self");
            // A model's reset clears its submodules' parameters too
            // (`model.zero_grad()` for an optimizer over
            // `model.embedding.parameters()`). A submodule's reset
            // (`model.discriminator.zero_grad()`) clears its part: a loop
            // that resets the parts one by one manages them on purpose (it
            // never counts as clearing what a step applies, see GL003).
            match program.model_of(o).or(owner) {
                Some(model) => {
                    let part = |a: &str, b: &str| {
                        crate::ir::attribute_of(a, b) || crate::ir::attribute_of(b, a)
                    };
                    // An object's model and optimizer (`self.model`,
                    // `self.optimizer_d`, or `trainer.` for a method
                    // inlined): the object's `model` is the one the script
                    // built the optimizer over `model.netD` from.
                    let held = prefix
                        .filter(|_| sibling)
                        .and_then(|p| m.get(p.len() + 1..))
                        .is_some_and(|inner| part(model, inner));
                    same_name(model, m) || part(model, m) || held
                }
                None => true,
            }
        }
    }
}

/// Whether `event` is a reset written as one: not a new optimizer or a new
/// tensor, which start empty without clearing anything.
fn explicit_reset(event: &Event) -> bool {
    matches!(event, Event::Reset(r) if !matches!(r, Reset::NewOptimizer(_) | Reset::NewTensor(_)))
}

/// The events directly in `nodes` (not in called functions), with spans;
/// with `around`, only those that run once around the loop there: not in
/// other loops (a reset in a sibling loop is that loop's, not a reset before
/// or after this one), in the loops that contain it.
fn events_around(nodes: &[Node], around: Option<Span>, out: &mut Vec<(Event, Span)>) {
    for node in nodes {
        match node {
            Node::Event(e, s) => out.push((e.clone(), *s)),
            Node::If { branches, .. } => {
                branches.iter().for_each(|b| events_around(b, around, out))
            }
            Node::Loop { body, span, .. } if around.is_none_or(|t| span.contains(t)) => {
                events_around(body, around, out)
            }
            Node::Loop { .. } => {}
            Node::Accumulate(body) => events_around(body, around, out),
            Node::Break
            | Node::Continue
            | Node::Return
            | Node::Raise
            | Node::Set(..)
            | Node::Arguments(_)
            | Node::Handed(_)
            | Node::Opaque(_) => {}
        }
    }
}

type LoopRef<'a> = (&'a [Node], Span, &'a [String], &'a [Counter]);

fn loops<'a>(nodes: &'a [Node], out: &mut Vec<LoopRef<'a>>) {
    for node in nodes {
        match node {
            Node::Loop {
                body,
                span,
                assigned,
                counters,
            } => {
                out.push((body, *span, assigned, counters));
                loops(body, out);
            }
            Node::If { branches, .. } => branches.iter().for_each(|b| loops(b, out)),
            Node::Accumulate(body) => loops(body, out),
            _ => {}
        }
    }
}

/// The facts of every (loop, updater) of `function`, innermost loops first.
pub fn of_function(program: &Program, function: &Function) -> Vec<LoopFacts> {
    let mut all_loops = Vec::new();
    loops(&function.body, &mut all_loops);
    // Innermost first: a loop nested in another starts later and ends sooner.
    all_loops.sort_by_key(|(_, s, _, _)| std::cmp::Reverse(s.start));
    let mut function_events = Vec::new();
    events_around(&function.body, None, &mut function_events);
    let mut out = Vec::new();
    for (body, span, assigned, counters) in all_loops {
        let cfg = Cfg::of_loop(program, body, assigned, counters);
        let mut around = Vec::new();
        events_around(&function.body, Some(span), &mut around);
        let backwards = cfg.find(|e| matches!(e, Event::Backward | Event::Extend(_)));
        if backwards.is_empty()
            && !cfg
                .events
                .iter()
                .flatten()
                .any(|(e, _)| matches!(e, Event::Step(Updater::Store(_))))
        {
            continue;
        }
        let updaters: BTreeSet<Updater> = cfg
            .events
            .iter()
            .flatten()
            .filter_map(|(e, _)| match e {
                Event::Step(u) => Some(u.clone()),
                _ => None,
            })
            .collect();
        let optimizers_in_loop = updaters
            .iter()
            .filter(|u| matches!(u, Updater::Optimizer(_)))
            .count();
        for updater in updaters {
            let scope = Scope {
                function_events: &function_events,
                around_events: &around,
                loop_span: span,
            };
            // A finding per train-step function whose step piles up: the
            // same facts, at each other such step.
            let facts = facts(
                program,
                &cfg,
                &backwards,
                &scope,
                updater,
                optimizers_in_loop,
            );
            for &step in &facts.pile_ups_elsewhere {
                out.push(LoopFacts {
                    pile_up_step: Some(step),
                    pile_up_from: Some(step),
                    pile_ups_elsewhere: Vec::new(),
                    ..facts.clone()
                });
            }
            out.push(facts);
        }
    }
    out
}

/// Where a loop lies in its function.
struct Scope<'a> {
    /// Every event of the function.
    function_events: &'a [(Event, Span)],
    /// The events that run once around the loop ([`events_around`]).
    around_events: &'a [(Event, Span)],
    /// The loop.
    loop_span: Span,
}

/// The facts of `updater` in the loop whose graph is `cfg`.
fn facts(
    program: &Program,
    cfg: &Cfg,
    backwards: &[usize],
    scope: &Scope,
    updater: Updater,
    optimizers_in_loop: usize,
) -> LoopFacts {
    let cycle = Cycle::new(program, cfg, backwards, &updater, optimizers_in_loop);
    let (pile_up, pile_up_window_of_one) = cycle.pile_up();
    let pile_ups_elsewhere = pile_up
        .map(|p| cycle.pile_ups_elsewhere(p, pile_up_window_of_one.is_some()))
        .unwrap_or_default()
        .into_iter()
        .map(|s| cfg.span(s))
        .collect();
    let pile_up_node = pile_up.map(|(from, _)| from);
    let reset_between_backward_and_step = cycle.reset_between_backward_and_step();
    let reset_discarding_accumulation = cycle.reset_discarding_accumulation();
    let skipped_pass_applied = cycle.skipped_pass_applied();
    let stray_pass = cycle.stray_pass();
    let (resets_in_loop, resets_outside_loop) =
        cycle.resets_in_and_outside_loop(scope, pile_up_node);
    let others_reset_in_loop = cycle.others_reset_in_loop();
    let store_extended_in_loop = cycle.store_extended_in_loop();
    let stale_store_step = cycle.stale_store_step(scope, &resets_in_loop, store_extended_in_loop);
    let steps = cycle.steps.iter().map(|&s| cfg.span(s)).collect();
    let uncalled_reset = match &updater {
        Updater::Optimizer(o) => program
            .uncalled_resets
            .iter()
            .filter(|(at, _)| scope.loop_span.contains(*at))
            .find(|(_, r)| {
                crate::ir::same_name(r, o)
                    || program
                        .model_of(o)
                        .is_some_and(|m| crate::ir::same_name(m, r))
            })
            .map(|(_, r)| r.clone()),
        _ => None,
    };
    LoopFacts {
        steps,
        updater,
        loop_span: scope.loop_span,
        uncalled_reset,
        pile_up_step: pile_up.map(|(_, to)| cfg.span(to)),
        pile_up_from: pile_up.map(|(from, _)| cfg.span(from)),
        pile_up_window_of_one,
        pile_ups_elsewhere,
        resets_in_loop,
        resets_outside_loop,
        optimizers_in_loop,
        others_reset_in_loop,
        reset_between_backward_and_step,
        reset_discarding_accumulation,
        stale_store_step,
        store_extended_in_loop,
        skipped_pass_applied,
        stray_pass,
    }
}

/// One updater's gradient cycle in one loop's graph: the nodes its facts
/// are computed from.
struct Cycle<'a> {
    program: &'a Program,
    cfg: &'a Cfg,
    updater: &'a Updater,
    /// The optimizers the loop steps, by name.
    stepped: Vec<&'a str>,
    /// Every backward pass of the loop (and `GradStore` extension).
    backwards: &'a [usize],
    /// The updater's steps.
    steps: Vec<usize>,
    /// Its resets ([`Cycle::own_reset`]).
    resets: Vec<usize>,
    /// Of `resets`, those that clear gradients a step would apply.
    clearing: Vec<usize>,
    /// The backward passes that count for this updater.
    own_backwards: Vec<usize>,
    /// The head of the loop whose counter picks the optimizer (`opts[i]`).
    picked_by: Option<usize>,
}

/// Whether `step` (`opt|optimizers[*]`, a loop's step of each optimizer a
/// list holds) steps `updater` (`optimizers[1]`) among them.
fn steps_each_of(step: &Updater, updater: &Updater) -> bool {
    let (Updater::Optimizer(each), Updater::Optimizer(one)) = (step, updater) else {
        return false;
    };
    !one.contains('|')
        && each
            .split('|')
            .skip(1)
            .any(|held| held.ends_with("[*]") && same_name(held, one))
}

/// The last part of a dotted name, without leading underscores
/// (`self._optimizer` -> `optimizer`).
fn last_name(s: &str) -> String {
    let l = s.rsplit('.').next().unwrap_or(s);
    l.trim_start_matches('_').to_string()
}

impl<'a> Cycle<'a> {
    fn new(
        program: &'a Program,
        cfg: &'a Cfg,
        backwards: &'a [usize],
        updater: &'a Updater,
        optimizers_in_loop: usize,
    ) -> Self {
        let stepped = cfg
            .events
            .iter()
            .flatten()
            .filter_map(|(e, _)| match e {
                Event::Step(Updater::Optimizer(o)) => Some(o.as_str()),
                _ => None,
            })
            .collect();
        let mut cycle = Cycle {
            program,
            cfg,
            updater,
            stepped,
            backwards,
            steps: cfg
                .find(|e| matches!(e, Event::Step(u) if u == updater || steps_each_of(u, updater))),
            resets: Vec::new(),
            clearing: Vec::new(),
            own_backwards: Vec::new(),
            picked_by: None,
        };
        // `opts[i]`: the loop whose counter picks it, the same for every step.
        if let Updater::Optimizer(o) = updater {
            let index = o.strip_suffix(']').and_then(|o| o.rsplit_once('['));
            if let Some((_, index)) = index {
                let heads: Vec<Option<usize>> = cycle
                    .steps
                    .iter()
                    .map(|&s| cfg.loop_picking(index, s))
                    .collect();
                if heads.windows(2).all(|w| w[0] == w[1]) {
                    cycle.picked_by = heads.first().copied().flatten();
                }
            }
        }
        cycle.resets = cfg.find(|e| cycle.own_reset(e));
        if cycle.resets.is_empty() {
            cycle.resets = cycle.resets_in_parts();
        }
        cycle.clearing = cycle.clearing_resets();
        cycle.own_backwards = cycle.own_backwards(optimizers_in_loop);
        cycle
    }

    /// Whether `e` resets this updater's gradients. A reset of an optimizer
    /// this loop never steps, named like the one it steps
    /// (`self.opt.step()`, `self.learn.opt.zero_grad()`; a property
    /// `optimizer` over `self._optimizer`), is: the same object reached
    /// another way.
    fn own_reset(&self, e: &Event) -> bool {
        resets(self.program, e, self.updater)
            || match (e, self.updater) {
                (Event::Reset(Reset::Optimizer(a)), Updater::Optimizer(b)) => {
                    last_name(a) == last_name(b) && !self.stepped.contains(&a.as_str())
                }
                _ => false,
            }
    }

    /// An optimizer with no reset of its own, built over several whole
    /// models each of which another optimizer over it alone (or over other
    /// models of this one), or the model itself, resets in the loop
    /// (infoGAN's `info_optimizer` over the generator and the
    /// discriminator, whose own optimizers reset them): those resets, which
    /// together clear all of its gradients. Empty otherwise.
    fn resets_in_parts(&self) -> Vec<usize> {
        let Updater::Optimizer(name) = self.updater else {
            return Vec::new();
        };
        let reach = &self.program.reach;
        let Some(models) = reach.whole_models(name).filter(|m| m.len() >= 2) else {
            return Vec::new();
        };
        // The models of this one that a reset at `e` clears, all of them
        // or none.
        let cleared = |e: &Event| -> Option<Vec<&String>> {
            match e {
                Event::Reset(Reset::Optimizer(o)) if o != name => {
                    let over = reach.whole_models(o)?;
                    over.iter()
                        .all(|m| models.contains(m))
                        .then(|| over.iter().collect())
                }
                Event::Reset(Reset::Model(m)) => models.iter().find(|x| *x == m).map(|x| vec![x]),
                _ => None,
            }
        };
        let mut found = Vec::new();
        let mut covered: Vec<&String> = Vec::new();
        for (i, event) in self.cfg.events.iter().enumerate() {
            if let Some(part) = event.as_ref().and_then(|(e, _)| cleared(e)) {
                found.push(i);
                covered.extend(part);
            }
        }
        if models.iter().all(|m| covered.contains(&m)) {
            found
        } else {
            Vec::new()
        }
    }

    /// Whether `e` is another optimizer's reset (a new tensor resets nobody
    /// else).
    fn others_reset(&self, e: &Event) -> bool {
        matches!(e, Event::Reset(r) if !matches!(r, Reset::NewTensor(_))) && !self.own_reset(e)
    }

    /// The resets that clear gradients the step would apply: a new optimizer
    /// (over fresh tensors) has none to clear, and `p.grad = None` on some
    /// parameters between backward and step drops them on purpose.
    /// A submodule's `zero_grad()` (`self.model.base.zero_grad()` between
    /// backward and step) freezes that part on purpose, like `p.grad = None`.
    fn clearing_resets(&self) -> Vec<usize> {
        self.resets
            .iter()
            .copied()
            .filter(|&z| match &self.cfg.events[z] {
                Some((
                    Event::Reset(
                        Reset::NewOptimizer(_)
                        | Reset::Parameters
                        | Reset::Tensor(_)
                        | Reset::NewTensor(_),
                    ),
                    _,
                )) => false,
                Some((Event::Reset(Reset::Model(m)), _)) => {
                    !m.strip_prefix("self.").unwrap_or(m).contains('.')
                }
                _ => true,
            })
            .collect()
    }

    /// The backward passes that count for this updater. With several
    /// optimizers, which parameters a backward pass reaches is not known: a
    /// pass counts for this one unless another optimizer's reset or step
    /// lies on every way from it to this one's steps (it belongs to that
    /// optimizer's cycle).
    fn own_backwards(&self, optimizers_in_loop: usize) -> Vec<usize> {
        let others = if optimizers_in_loop >= 2 {
            self.other_cycles()
        } else {
            Vec::new()
        };
        // Another's reset after the pass does not take it from this
        // optimizer when the pass is the first after this one's own reset
        // (`actor_opt.zero_grad(); pi_loss.backward(); adv_opt.zero_grad();
        // adv_loss.backward(); ...; actor_opt.step(); adv_opt.step()`).
        let other_steps: Vec<usize> = others
            .iter()
            .copied()
            .filter(|&t| matches!(self.cfg.events[t], Some((Event::Step(_), _))))
            .collect();
        self.backwards
            .iter()
            .copied()
            .filter(|&b| {
                others.is_empty()
                    || self.cfg.ask(Query {
                        blocked: &others,
                        ..Query::new(b, &self.steps)
                    })
                    || self.first_after_own_reset(b)
                        && self.cfg.ask(Query {
                            blocked: &other_steps,
                            ..Query::new(b, &self.steps)
                        })
            })
            .collect()
    }

    /// Whether pass `b`, through this optimizer's models only (or named for
    /// it), is the first after a reset of this optimizer on every way to it
    /// within the iteration, and that reset is not side by side with
    /// another's (a pass runs between them): the order then says the pass
    /// is this optimizer's.
    fn first_after_own_reset(&self, b: usize) -> bool {
        let cfg = self.cfg;
        if self.resets.is_empty() {
            return false;
        }
        // Only a pass through this optimizer's models, and through no
        // other's unless its loss is named for this one (`adv_loss` for
        // `adversary_optimizer`): one that goes through another's too may
        // be that one's, whatever its place.
        let Updater::Optimizer(name) = self.updater else {
            return false;
        };
        let reach = &self.program.reach;
        let Some(pass) = reach.pass_at(cfg.span(b)) else {
            return false;
        };
        let through =
            |o: &str| reach.models_of(o).is_empty() || reach.pass_reaches_optimizer(pass, o);
        let named_for_this = || {
            self.name_owner(&pass.loss)
                .is_some_and(|o| same_name(o, name))
        };
        let shared = self
            .stepped
            .iter()
            .any(|o| !same_name(o, name) && through(o));
        if reach.models_of(name).is_empty()
            || !reach.pass_reaches_optimizer(pass, name)
            || shared && !named_for_this()
        {
            return false;
        }
        let resets = cfg.find(|e| matches!(e, Event::Reset(_)));
        let others: Vec<usize> = resets
            .iter()
            .copied()
            .filter(|r| !self.resets.contains(r))
            .collect();
        // No way into `b` from the iteration's start, another reset, a
        // step or another pass without one of this optimizer's resets
        // between.
        let stops: Vec<usize> = others
            .iter()
            .chain(self.backwards.iter().filter(|&&o| o != b))
            .copied()
            .chain(cfg.find(|e| matches!(e, Event::Step(_))))
            .chain([cfg.head])
            .collect();
        let unguarded = stops
            .iter()
            .any(|&z| cfg.forward_path(z, &[b], &self.resets));
        if unguarded {
            return false;
        }
        // Side by side: another's reset reaches this one's with no pass
        // or step between.
        let between: Vec<usize> = self
            .backwards
            .iter()
            .copied()
            .chain(cfg.find(|e| matches!(e, Event::Step(_))))
            .collect();
        !others
            .iter()
            .any(|&z| cfg.forward_path(z, &self.resets, &between))
    }

    /// The resets and steps of the other optimizers' cycles: their resets,
    /// and their steps not taken together with this one's.
    fn other_cycles(&self) -> Vec<usize> {
        let cfg = self.cfg;
        let steps = &self.steps;
        // Steps taken together (`opt_a.step(); opt_b.step()`, no backward
        // pass or reset between) share the passes before them.
        let all_resets = cfg.find(|e| matches!(e, Event::Reset(_)));
        let between: Vec<usize> = all_resets.iter().chain(self.backwards).copied().collect();
        // Always together: every way on from the first reaches the second
        // before a backward pass, a reset or the end of the iteration (not
        // only when some test holds).
        let always = |from: usize, to: &[usize]| {
            let escape: Vec<usize> = between.iter().copied().chain([cfg.head]).collect();
            cfg.forward_path(from, to, &between)
                && !cfg.ask(Query {
                    blocked: to,
                    ..Query::new(from, &escape)
                })
        };
        let together = |t: usize| always(t, steps) || steps.iter().any(|&s| always(s, &[t]));
        cfg.find(|e| match e {
            Event::Reset(_) => self.others_reset(e),
            Event::Step(u) => u != self.updater,
            _ => false,
        })
        .into_iter()
        .filter(|&t| !matches!(&cfg.events[t], Some((Event::Step(_), _))) || !together(t))
        .collect()
    }

    /// A step after which a way reaches a step again through a backward
    /// pass and no reset, and the window length setting that must be 1 for
    /// it, if any: a window length that is a setting may be 1 (its usual
    /// default), and then a reset tested off the window's boundary never
    /// runs.
    fn pile_up(&self) -> (Option<(usize, usize)>, Option<String>) {
        let pile_up = |window_of_one: bool| {
            let ask = |from: usize, to: &[usize]| self.reapplies(from, to, window_of_one);
            let &from = self.steps.iter().find(|&&s| ask(s, &self.steps))?;
            // Where it shows: the step that applies again a pass `from`
            // applied (the same step, a loop later, with one step).
            let to = self
                .steps
                .iter()
                .copied()
                .find(|&t| ask(from, &[t]))
                .unwrap_or(from);
            Some((from, to))
        };
        match (pile_up(false), self.cfg.window_setting()) {
            (Some(s), _) => (Some(s), None),
            (None, Some(k)) => match pile_up(true) {
                Some(s) => (Some(s), Some(k.to_string())),
                None => (None, None),
            },
            (None, None) => (None, None),
        }
    }

    /// Whether a step of `to` applies again a pass the step `from` applied:
    /// a path from it through one of this updater's passes, and no reset
    /// (with a window of one, when asked).
    fn reapplies(&self, from: usize, to: &[usize], window_of_one: bool) -> bool {
        self.cfg.ask(Query {
            blocked: &self.resets,
            need: Some(&self.own_backwards),
            window_of_one,
            picked_by: self.picked_by,
            ..Query::new(from, to)
        })
    }

    /// Besides the pile-up `(from, to)`, when `to` lies in a train-step
    /// function the loop calls (its own backward pass and step), the steps
    /// of the loop's other such functions that apply again a pass they
    /// applied (one per setting, `train_step_pytorch` and
    /// `train_step_ddp`, each with its reset left out): each is reported.
    fn pile_ups_elsewhere(&self, (from, to): (usize, usize), window_of_one: bool) -> Vec<usize> {
        let frame = |n: usize| self.cfg.frames.get(n).copied();
        let runs_a_pass = |f: Option<usize>| {
            f.is_some_and(|f| f > 0 && self.own_backwards.iter().any(|&b| frame(b) == Some(f)))
        };
        if !runs_a_pass(frame(to)) {
            return Vec::new();
        }
        let mut seen: Vec<usize> = [frame(from), frame(to)].into_iter().flatten().collect();
        let mut out = Vec::new();
        for &s in &self.steps {
            let Some(frame) = frame(s).filter(|&f| runs_a_pass(Some(f))) else {
                continue;
            };
            if seen.contains(&frame) {
                continue;
            }
            if self.reapplies(s, &[s], window_of_one) {
                seen.push(frame);
                out.push(s);
            }
        }
        out
    }

    /// A reset that runs, in program order within one iteration (no loop
    /// closes), after a backward pass and before a step, with no backward
    /// between the reset and the step; the same flags hold all the way.
    /// Only this optimizer's passes: a proximal optimizer reset and stepped
    /// after another optimizer's step applies no pass on purpose.
    /// Or, with the step at the top of the iteration, a reset after the
    /// pass in the same iteration that every way from a pass to a step
    /// passes (`step(); loss = ...; loss.backward(); zero_grad()`): no
    /// step ever applies a pass.
    fn reset_between_backward_and_step(&self) -> Option<Span> {
        // A gradient written by hand on every way from the reset to the
        // step (`p.grad = clipped[name]`) is what the step applies: no
        // zeros. A write in a loop of its own (over the parameters, under
        // a test of each or not) counts as that loop.
        let writes: Vec<usize> = self
            .cfg
            .find(|e| matches!(e, Event::Reset(_)))
            .into_iter()
            .filter(|&n| self.program.grad_writes.contains(&self.cfg.span(n)))
            .collect();
        let written_after = |z: usize| {
            let marks: Vec<usize> = writes
                .iter()
                .map(|&w| match self.cfg.loops[w].last() {
                    Some(&l)
                        if !self.cfg.loops[z].contains(&l)
                            && self.steps.iter().all(|s| !self.cfg.loops[*s].contains(&l)) =>
                    {
                        l
                    }
                    _ => w,
                })
                .collect();
            marks.iter().any(|&m| self.cfg.forward_path(z, &[m], &[]))
                && !self.cfg.forward_path(z, &self.steps, &marks)
        };
        let between = |z: usize, back: bool| {
            if written_after(z) {
                return false;
            }
            self.own_backwards.iter().any(|&b| {
                // A step before the reset applied the pass already (a
                // final step after the loop then has nothing to apply).
                self.cfg.ask(Query {
                    need: Some(&[z]),
                    blocked_after_need: self.backwards,
                    blocked_before_need: &self.steps,
                    back,
                    need_in_first_iteration: back,
                    ..Query::new(b, &self.steps)
                })
            })
        };
        let within = self.clearing.iter().find(|&&z| between(z, false));
        // Not where some iteration passes without a step: a window whose
        // passes the reset wipes is GL004's.
        let across = || {
            // Only where a step comes before a pass in the loop's body
            // (nodes are numbered in program order).
            let step_first = self
                .steps
                .iter()
                .any(|&s| self.own_backwards.iter().any(|&b| s < b));
            if !step_first || self.passes_without_step(self.cfg.head, None) {
                return None;
            }
            self.clearing.iter().find(|&&z| {
                between(z, true)
                    && !self
                        .own_backwards
                        .iter()
                        .any(|&b| self.cfg.path(b, &self.steps, &self.clearing, None))
            })
        };
        within.or_else(across).map(|&z| self.cfg.span(z))
    }

    /// After a step, a backward pass cleared before any step applied it,
    /// while some iteration passes a backward and no step: accumulation
    /// defeated. A pass a skip (non-finite loss) left out is meant to be
    /// dropped, `accelerator.accumulate` gates its resets, and a reset
    /// outside the loops of the step (once per fold, per epoch) starts a
    /// new run rather than cutting a window.
    fn reset_discarding_accumulation(&self) -> Option<Span> {
        let step_is_conditional = self.passes_without_step(self.cfg.head, None);
        // An optimizer stepped in `accelerator.accumulate` is a prepared one.
        let prepared = self.steps.iter().any(|&s| self.cfg.in_accumulate[s]);
        let accumulating = self.accumulating_passes();
        self.clearing
            .iter()
            .find(|&&z| {
                !self.gated_by_accumulate(z, prepared)
                    && !self.drops_the_iteration(z)
                    && self.window_open_around(z, step_is_conditional)
                    && (self.clears_from_run_start(z, &accumulating)
                        || self.clears_after_step(z, &accumulating))
            })
            .map(|&z| self.cfg.span(z))
    }

    /// Whether the reset `z` is followed at once by a `continue` on every
    /// way, in a branch that only resets and leaves (`if skipped:
    /// model.zero_grad(); continue`), not under a window's test (`if
    /// (i + 1) % k != 0: zero_grad(); continue` cuts every window): the
    /// iteration's passes are dropped on purpose.
    fn drops_the_iteration(&self, z: usize) -> bool {
        let cfg = self.cfg;
        let windowed = cfg.guards[z]
            .iter()
            .chain(cfg.entries_of(z))
            .any(|&(c, _)| matches!(cfg.conds[c].kind, crate::cfg::Kind::Counter(..)));
        cfg.before_continue.contains(&z)
            && !windowed
            && cfg.succ[z]
                .iter()
                .all(|&s| cfg.back_edges.contains(&(z, s)))
    }

    /// Whether some iteration of the loop at `head` (within the loop
    /// `within`) passes a backward and no step.
    fn passes_without_step(&self, head: usize, within: Option<usize>) -> bool {
        self.cfg.ask(Query {
            blocked: &self.steps,
            need: Some(&self.own_backwards),
            avoid_skips: true,
            within,
            ..Query::new(head, &[head])
        })
    }

    /// Passes meant to add up: some way takes them to a step with no reset
    /// on it (an attack's or a probe's pass, always cleared before this
    /// optimizer's own pass and step, is not accumulation; nor is an
    /// attack's pass left in the model, a stray one, GL009).
    fn accumulating_passes(&self) -> Vec<usize> {
        self.own_backwards
            .iter()
            .copied()
            .filter(|&b| {
                self.cfg.ask(Query {
                    blocked: &self.resets,
                    ..Query::new(b, &self.steps)
                }) && self.attack_pass(b).is_none()
            })
            .collect()
    }

    /// Whether `accelerator.accumulate` skips the reset `z` until the window
    /// closes: a prepared optimizer's reset (also right after the block: the
    /// window's state outlives it), not a model's or parameters' reset.
    /// (Inside the block the graph ties it to the window's end.) Under
    /// DeepSpeed it does nothing at all.
    fn gated_by_accumulate(&self, z: usize, prepared: bool) -> bool {
        let cfg = self.cfg;
        prepared
            && (!cfg.in_accumulate[z] || self.program.deepspeed)
            && matches!(&cfg.events[z], Some((Event::Reset(Reset::Optimizer(_)), _)))
    }

    /// Whether some iteration of the loop around the reset `z` passes a
    /// backward and no step (in a micro-batch loop, every one does).
    fn window_open_around(&self, z: usize, step_is_conditional: bool) -> bool {
        let cfg = self.cfg;
        match cfg.loops[z].last() {
            None => step_is_conditional,
            Some(&l) => {
                self.passes_without_step(l, Some(l))
                    // And a pass of that loop reaches a step with no reset
                    // on the way: passes meant to add up, not probes (a
                    // gradient read per objective, cleared before the
                    // real backward pass).
                    && self.own_backwards.iter().any(|&b| {
                        cfg.loops[b].contains(&l)
                            && cfg.ask(Query {
                                blocked: &self.resets,
                                back: false,
                                ..Query::new(b, &self.steps)
                            })
                    })
            }
        }
    }

    /// Over a window as long as the run, the run's start opens it: whether
    /// the reset `z`, which the window's tests do not guard, clears in a
    /// later iteration a pass of an earlier one.
    fn clears_from_run_start(&self, z: usize, accumulating: &[usize]) -> bool {
        let cfg = self.cfg;
        cfg.whole_run
            && !cfg.guards[z]
                .iter()
                .any(|&(c, _)| matches!(cfg.conds[c].kind, crate::cfg::Kind::Counter(..)))
            && cfg.ask(Query {
                blocked: &self.steps,
                need: Some(accumulating),
                need_then_next_iteration: true,
                avoid_skips: true,
                ..Query::new(cfg.head, &[z])
            })
    }

    /// Whether the reset `z` clears, after a step, passes meant to add up
    /// before a step applied them, within one run of the loops around both.
    fn clears_after_step(&self, z: usize, accumulating: &[usize]) -> bool {
        let cfg = self.cfg;
        let outside = cfg.outside_loop_of(z);
        self.steps.iter().any(|&s| {
            cfg.within_loops_of(z, s)
                && cfg.ask(Query {
                    blocked: &self.steps,
                    need: Some(accumulating),
                    avoid_skips: true,
                    // A new run of the loop (next epoch, next fold)
                    // starts a new window.
                    within: cfg.common_loop(s, z),
                    blocked_after_need: &outside,
                    ..Query::new(s, &[z])
                })
        })
    }

    /// A step that applies a pass whose own step a skip left out: the pass
    /// reaches the next iteration with no reset, and a step there applies it.
    fn skipped_pass_applied(&self) -> Option<Span> {
        let cfg = self.cfg;
        let skips = cfg.skip_nodes(&self.steps);
        if skips.is_empty() {
            return None;
        }
        self.steps
            .iter()
            .find(|&&s| {
                // Another optimizer's pass before the skip (a discriminator
                // updated first) is that optimizer's to apply.
                self.own_backwards.iter().any(|&b| {
                    // The skip follows the pass in one iteration of every
                    // loop around both: a skip before the pass (`if
                    // isnan(loss): continue` ahead of `backward()`) leaves
                    // out a later pass, not this one.
                    let after: Vec<usize> = skips
                        .iter()
                        .copied()
                        .filter(|&k| cfg.forward_path(b, &[k], &self.steps))
                        .collect();
                    !after.is_empty()
                        && cfg.ask(Query {
                            blocked: &self.resets,
                            need: Some(&after),
                            blocked_before_need: &self.steps,
                            // The skip leaves out this pass's own step.
                            need_in_first_iteration: true,
                            need_then_next_iteration: true,
                            ..Query::new(b, &[s])
                        })
                })
            })
            .map(|&s| cfg.span(s))
    }

    /// GL009: a backward pass that is another optimizer's (it runs before
    /// that optimizer's step and belongs to its cycle), whose loss is
    /// certainly computed through the model this optimizer was built over
    /// (a frozen model never counts), and that a way takes, with nothing
    /// that may clear that model's gradients, through this optimizer's own
    /// pass to its step.
    fn stray_pass(&self) -> Option<StrayPass> {
        let Updater::Optimizer(name) = self.updater else {
            return None;
        };
        let reach = &self.program.reach;
        if reach.passes.is_empty() || self.clearing.is_empty() {
            return None;
        }
        let models = reach.models_of(name);
        let cfg = self.cfg;
        let mut others: Vec<&str> = self
            .stepped
            .iter()
            .copied()
            .filter(|o| !same_name(o, name))
            .collect();
        others.sort_unstable();
        others.dedup();
        // An attack's passes are not this optimizer's own, whoever else's.
        let attacks: Vec<(usize, &str)> = self
            .backwards
            .iter()
            .filter_map(|&b| Some((b, self.attack_pass(b)?)))
            .collect();
        let own_backwards: Vec<usize> = self
            .own_backwards
            .iter()
            .copied()
            .filter(|o| !attacks.iter().any(|(a, _)| a == o))
            .collect();
        for &b in self.backwards {
            if !matches!(cfg.events[b], Some((Event::Backward, _))) {
                continue;
            }
            let Some(pass) = reach.pass_at(cfg.span(b)) else {
                continue;
            };
            let attack = attacks.iter().find(|(a, _)| *a == b).map(|(_, t)| *t);
            let separated = self.separated_owner(b, pass, &others, &models);
            // Named for another optimizer, and certainly through this one's
            // model (not through a module's helper that may detach:
            // `compute_advantage(gamma, td_delta)`).
            // Only where the order says nothing: the other optimizer's
            // reset too comes before the pass, with no step between (resets
            // side by side, then the passes, then the steps).
            // Where losses are not read by their names, a pass is still
            // another optimizer's when its name and the models say so
            // together: the only pass through that one's models, named
            // for it (SAC's `policy_loss` through the critic).
            let agreed = || {
                let owner = self.name_owner(&pass.loss)?;
                self.sole_feeder(pass, name).filter(|o| same_name(o, owner))
            };
            let named = self
                .named_for(&pass.loss)
                .or_else(|| self.fed_only_by(pass, name))
                .or_else(agreed)
                .filter(|o| {
                    let steps = cfg.find(|e| matches!(e, Event::Step(_)));
                    !same_name(o, name)
                        && models
                            .iter()
                            .any(|m| reach.pass_reaches_directly(pass, m, &models))
                        && cfg
                            .find(|e| self.resets_other(e, o))
                            .iter()
                            .any(|&r| cfg.forward_path(r, &[b], &steps))
                });
            if attack.is_none()
                && own_backwards.contains(&b)
                && !self.claimed_by_other(b)
                && separated.is_none()
                && named.is_none()
            {
                continue;
            }
            for model in &models {
                if !reach.pass_reaches(pass, model, &models) || reach.may_freeze(model) {
                    continue;
                }
                // Whose pass it is: an optimizer over other models only,
                // stepped after it before this one is, or reset before it
                // in the iteration and stepped after it (`opt_d.zero_grad();
                // d_loss.backward(); opt_g.step(); opt_d.step()`), or the
                // one whose model this optimizer's own pass detaches.
                let named = named.filter(|o| {
                    reach.only_other_models(o, model)
                        && reach.pass_reaches_directly(pass, model, &models)
                });
                // An optimizer over some of this one's models only
                // (infoGAN's `D_optimizer` for `info_optimizer` over the
                // generator and the discriminator) is another's too.
                let part_of_mine = |o: &str| {
                    let theirs = reach.models_of(o);
                    !theirs.is_empty()
                        && theirs.len() < models.len()
                        && theirs.iter().all(|m| models.contains(m))
                };
                let owns = |o: &str| {
                    (reach.only_other_models(o, model) || part_of_mine(o)) && {
                        let steps =
                            cfg.find(|e| matches!(e, Event::Step(Updater::Optimizer(x)) if x == o));
                        let resets = cfg.find(|e| self.resets_other(e, o));
                        cfg.forward_path(b, &steps, &self.steps)
                            || cfg.forward_path(b, &steps, &[])
                                && resets.iter().any(|&z| cfg.forward_path(z, &[b], &steps))
                    }
                };
                // Of the optimizers stepped after the pass, one whose model
                // it goes through first (the reconstruction pass through
                // the encoder and the generator is the generator's, not the
                // discriminator's stepped later).
                let through = |o: &str| reach.pass_reaches_optimizer(pass, o);
                // Of several, the one that steps first after the pass
                // (`D_loss.backward(); opt_d.step()`, though the pass goes
                // through the generator too and `opt_g` steps later).
                let first_stepped = |candidates: Vec<&'a str>| {
                    let steps_of = |o: &str| {
                        cfg.find(|e| matches!(e, Event::Step(Updater::Optimizer(x)) if x == o))
                    };
                    candidates
                        .iter()
                        .copied()
                        .find(|&o| {
                            let others_steps: Vec<usize> = candidates
                                .iter()
                                .filter(|&&x| x != o)
                                .flat_map(|x| steps_of(x))
                                .collect();
                            cfg.forward_path(b, &steps_of(o), &others_steps)
                        })
                        .or(candidates.first().copied())
                };
                let Some(other) = attack.or(separated).or(named).or_else(|| {
                    let through_and_owns: Vec<&str> = others
                        .iter()
                        .copied()
                        .filter(|o| through(o) && owns(o))
                        .collect();
                    // A pass that does not read an optimizer's tensors
                    // (taken by name, so read exactly) is not its pass.
                    first_stepped(through_and_owns).or_else(|| {
                        others
                            .iter()
                            .copied()
                            .find(|o| owns(o) && (through(o) || !reach.over_tensors_only(o)))
                    })
                }) else {
                    continue;
                };
                // Both optimizers reset together at the top of the iteration
                // (`opt_e.zero_grad(); opt_g.zero_grad()`, before any pass)
                // and then a pass through both models: maybe a
                // joint loss both are meant to step on (BicycleGAN), not a
                // stray one.
                let other_resets = cfg.find(|e| self.resets_other(e, other));
                let first_in_iteration = |z: usize| {
                    self.backwards
                        .iter()
                        .all(|&x| !cfg.forward_path(x, &[z], &[]))
                };
                let joint = self.resets.iter().any(|&z| {
                    first_in_iteration(z)
                        && other_resets
                            .iter()
                            .any(|&w| cfg.succ[z].contains(&w) || cfg.succ[w].contains(&z))
                });
                // Unless the pass's owner steps on it before this
                // optimizer's own pass, a pass through this optimizer's
                // model alone: the pass is spent then, not a joint loss
                // both step on (`g_loss.backward(); opt_g.step();
                // d_loss.backward(); opt_d.step()`, with `d_loss` on
                // detached fakes; BicycleGAN's generator-only loss goes
                // through the encoder too).
                let spent = || {
                    let other_steps = cfg.find(
                        |e| matches!(e, Event::Step(Updater::Optimizer(x)) if same_name(x, other)),
                    );
                    let other_models = reach.models_of(other);
                    let alone = |o: usize| {
                        reach.pass_at(cfg.span(o)).is_some_and(|p| {
                            !other_models
                                .iter()
                                .any(|m| reach.pass_reaches(p, m, &other_models))
                        })
                    };
                    // Or the owner steps on it and then resets before this
                    // optimizer's own pass (`d_loss.backward(); opt_d.step();
                    // opt_d.zero_grad(); ...; g_loss.backward(); opt_g.step()`):
                    // the owner threw the pass's gradients away, a joint loss
                    // would have them kept by both.
                    let discarded = |t: usize, o: usize| {
                        other_resets.iter().any(|&z| {
                            cfg.forward_path(t, &[z], &self.steps)
                                && cfg.forward_path(z, &[o], &self.steps)
                        })
                    };
                    other_steps.iter().any(|&t| {
                        cfg.forward_path(b, &[t], &self.steps)
                            && own_backwards.iter().any(|&o| {
                                o != b
                                    && (alone(o) || discarded(t, o))
                                    && cfg.forward_path(t, &[o], &self.steps)
                            })
                    })
                };
                if separated.is_none() && joint && self.program.reach.joint_loss_shared && !spent()
                {
                    continue;
                }
                let blocked = cfg.find(|e| self.may_clear(e, model));
                // From the stray pass to the step `s` through one of `via`
                // (none of `before` and no step before it), nothing that
                // may clear the model on the way.
                let reaches = |s: usize, via: &[usize], before: &[usize]| {
                    let rest: Vec<usize> = self.steps.iter().copied().filter(|&t| t != s).collect();
                    let before: Vec<usize> = self.steps.iter().chain(before).copied().collect();
                    cfg.ask(Query {
                        blocked: &blocked,
                        need: Some(via),
                        blocked_before_need: &before,
                        blocked_after_need: &rest,
                        ..Query::new(b, &[s])
                    })
                };
                // Or, within the iteration, after this optimizer's own pass
                // and before its step, with no reset of it in between
                // (`opt_g.zero_grad(); g_loss.backward(); opt_d.zero_grad();
                // d_loss.backward(); opt_g.step()`).
                let after_own = |s: usize| {
                    let stops: Vec<usize> = blocked.iter().chain(&self.steps).copied().collect();
                    let rest: Vec<usize> = self.steps.iter().copied().filter(|&t| t != s).collect();
                    let between: Vec<usize> = blocked.iter().chain(&rest).copied().collect();
                    // Its own: after its reset, or named for it where
                    // names are read (resets side by side).
                    let own = |o: usize| {
                        self.after_own_reset(o)
                            || reach.pass_at(cfg.span(o)).is_some_and(|p| {
                                self.named_for(&p.loss).is_some_and(|x| same_name(x, name))
                                    || self.own_by_name_and_models(p, name)
                            }) && self
                                .resets
                                .iter()
                                .any(|&r| cfg.forward_path(r, &[o], &self.steps))
                    };
                    self.backwards
                        .iter()
                        .any(|&o| o != b && own(o) && cfg.forward_path(o, &[b], &stops))
                        && cfg.forward_path(b, &[s], &between)
                };
                let carried = self
                    .steps
                    .iter()
                    .find(|&&s| reaches(s, &own_backwards, &[]));
                let Some(&step) = carried.or_else(|| self.steps.iter().find(|&&s| after_own(s)))
                else {
                    continue;
                };
                let after_own = carried.is_none();
                // The own passes met first on such a way.
                let first: Vec<usize> = self
                    .own_backwards
                    .iter()
                    .copied()
                    .filter(|&o| {
                        let earlier: Vec<usize> = self
                            .own_backwards
                            .iter()
                            .copied()
                            .filter(|&x| x != o)
                            .collect();
                        reaches(step, &[o], &earlier)
                    })
                    .collect();
                let own_backward = match first.as_slice() {
                    [o] if !after_own => Some(*o),
                    _ => None,
                };
                let stops: Vec<usize> = self.steps.iter().chain(&self.resets).copied().collect();
                let reset_there_is_certain = own_backward.is_some_and(|o| {
                    !own_backwards.iter().any(|&x| {
                        cfg.ask(Query {
                            blocked: &stops,
                            ..Query::new(x, &[o])
                        })
                    })
                });
                return Some(StrayPass {
                    step: cfg.span(step),
                    backward: cfg.span(b),
                    loss: pass.loss.clone(),
                    model: model.clone(),
                    other: other.to_string(),
                    by_hand: attack.is_some(),
                    own_backward: own_backward.map(|o| cfg.span(o)),
                    after_own,
                    reset_there_is_certain,
                });
            }
        }
        None
    }

    /// The other optimizer whose pass `b` (`pass`) is because this one's
    /// own passes are kept apart from its model: `b` goes through that
    /// optimizer's model and this one's (`models`), that optimizer steps
    /// after it, and another pass of the iteration through this one's
    /// model reads that model only under `.detach()` (`d_loss` on
    /// `fake.detach()`, `g_loss` through the discriminator on `fake`): the
    /// author keeps the two models' gradients apart, so `b` is not a joint
    /// loss for both.
    fn separated_owner<'o>(
        &self,
        b: usize,
        pass: &Pass,
        others: &[&'o str],
        models: &[String],
    ) -> Option<&'o str> {
        let reach = &self.program.reach;
        let cfg = self.cfg;
        let detaches = |p: &Pass, theirs: &[String]| {
            theirs.iter().any(|m| {
                p.detached
                    .iter()
                    .any(|d| d == m || crate::ir::attribute_of(d, m))
            })
        };
        others.iter().copied().find(|o| {
            let theirs = reach.models_of(o);
            // A tensor detached in a target (SAC's temperature) is no
            // model kept apart.
            if theirs.is_empty()
                || reach.over_tensors_only(o)
                || !theirs.iter().any(|m| reach.pass_reaches(pass, m, &theirs))
                || !models.iter().all(|m| reach.only_other_models(o, m))
            {
                return false;
            }
            let steps =
                cfg.find(|e| matches!(e, Event::Step(Updater::Optimizer(x)) if same_name(x, o)));
            if !cfg.forward_path(b, &steps, &[]) {
                return false;
            }
            self.backwards.iter().any(|&x| {
                x != b
                    && reach.pass_at(cfg.span(x)).is_some_and(|p| {
                        detaches(p, &theirs)
                            && !theirs.iter().any(|m| reach.pass_reaches(p, m, &theirs))
                            && models.iter().any(|m| reach.pass_reaches(p, m, models))
                    })
            })
        })
    }

    /// The tensor whose hand-written update a pass `b` is for, when it is
    /// an attack's (or any search over inputs) within the iteration: that
    /// update reads it before any other pass or a step of this updater
    /// (`delta.data += alpha * delta.grad.sign()`), and the pass runs
    /// again before this updater steps (the attack's loop). Its gradients
    /// in the model are not meant for this updater's step.
    fn attack_pass(&self, b: usize) -> Option<&'a str> {
        let cfg = self.cfg;
        if !matches!(cfg.events[b], Some((Event::Backward, _))) {
            return None;
        }
        let stops: Vec<usize> = self.backwards.iter().chain(&self.steps).copied().collect();
        let tensor = cfg.events.iter().enumerate().find_map(|(t, e)| match e {
            Some((Event::Step(Updater::Tensor(name)), _)) if cfg.forward_path(b, &[t], &stops) => {
                Some(name.as_str())
            }
            _ => None,
        })?;
        // Again before a step: through resets too (an attack's loop that
        // clears the model's gradients before each of its passes,
        // `model.zero_grad(); cost.backward()`, leaves the last one).
        cfg.ask(Query {
            blocked: &self.steps,
            ..Query::new(b, &[b])
        })
        .then_some(tensor)
    }

    /// Where passes are read by their losses (see
    /// [`crate::ir::Reach::losses_named`]): the one other stepped
    /// optimizer whose models `pass` alone of the file's passes reaches,
    /// while this optimizer (`name`) has a pass of its own that does not
    /// reach them. SAC's `policy_loss` is the only pass through the actor:
    /// `act_opt`'s, not the critic's, which has `q_loss`.
    fn fed_only_by(&self, pass: &Pass, name: &str) -> Option<&'a str> {
        if !self.program.reach.losses_named {
            return None;
        }
        self.sole_feeder(pass, name)
    }

    /// Whether `pass` is this optimizer's (`name`) by its name and its
    /// models together, whether or not passes are read by their losses:
    /// named for it, and through its models and no other stepped
    /// optimizer's (SAC's `q_loss` on a detached target).
    fn own_by_name_and_models(&self, pass: &Pass, name: &str) -> bool {
        let reach = &self.program.reach;
        let through = |o: &str| reach.pass_reaches_optimizer(pass, o);
        self.name_owner(&pass.loss)
            .is_some_and(|x| same_name(x, name))
            && through(name)
            && self
                .stepped
                .iter()
                .all(|o| same_name(o, name) || reach.models_of(o).is_empty() || !through(o))
    }

    /// [`Cycle::fed_only_by`], whether or not passes are read by their
    /// losses.
    fn sole_feeder(&self, pass: &Pass, name: &str) -> Option<&'a str> {
        let reach = &self.program.reach;
        let own_models = reach.models_of(name);
        let mut found = None;
        for &o in &self.stepped {
            if same_name(o, name) {
                continue;
            }
            let theirs = reach.models_of(o);
            let through = |p: &Pass| theirs.iter().any(|m| reach.pass_reaches(p, m, &theirs));
            let others = || reach.passes.iter().filter(|p| p.span != pass.span);
            let fed = !theirs.is_empty()
                && through(pass)
                && others().all(|p| !through(p))
                && others().any(|p| {
                    !through(p)
                        && own_models
                            .iter()
                            .any(|m| reach.pass_reaches(p, m, &own_models))
                });
            if fed {
                if found.is_some() {
                    return None;
                }
                found = Some(o);
            }
        }
        found
    }

    /// The one stepped optimizer a loss is named for (`g_loss`, `loss_G`,
    /// `errG` for `opt_g`, `gen_optimizer`, `optimizerG`), when the reading
    /// by names is on (see [`crate::ir::Reach::losses_named`]).
    fn named_for(&self, loss: &str) -> Option<&'a str> {
        if !self.program.reach.losses_named {
            return None;
        }
        self.name_owner(loss)
    }

    /// [`Cycle::named_for`], whether or not passes are read by their
    /// losses.
    fn name_owner(&self, loss: &str) -> Option<&'a str> {
        let of_loss = name_words(loss, &["loss", "losses", "err", "error", "total", "l"]);
        if of_loss.is_empty() {
            return None;
        }
        let mut found = None;
        for &o in &self.stepped {
            let of_optimizer = name_words(
                o,
                &[
                    "opt",
                    "optim",
                    "optimizer",
                    "optimiser",
                    "optimizers",
                    "solver",
                    "model",
                ],
            );
            // The same word, or one cut short to its first letter (`g`,
            // `gen`) or to three or more (`disc`, `discriminator`): `di`
            // for `dis` is as likely another network's (`ds`, `di`).
            let abbreviates = |short: &str, long: &str| {
                long.starts_with(short)
                    && match short.len() {
                        // `g` for `gen`, not for `gradient` or `gp`.
                        1 => long.len() == 3,
                        2 => false,
                        _ => true,
                    }
            };
            let matches = of_loss.iter().any(|a| {
                of_optimizer
                    .iter()
                    .any(|b| a == b || abbreviates(a, b) || abbreviates(b, a))
            });
            if matches {
                match found {
                    Some(f) if !same_name(f, o) => return None,
                    _ => found = Some(o),
                }
            }
        }
        found
    }

    /// Whether the last reset before pass `b` in the iteration may be
    /// another stepped optimizer's, reset after a pass of this one's
    /// (`opt_g.zero_grad();
    /// g_loss.backward(); opt_d.zero_grad(); d_loss.backward();
    /// opt_g.step()`: `d_loss` is the discriminator's pass, though it lies
    /// between the generator's reset and step).
    fn claimed_by_other(&self, b: usize) -> bool {
        let cfg = self.cfg;
        // Another stepped optimizer's reset: its `zero_grad()`, or its
        // model's (`net_g.zero_grad()` for `opt_g` over `net_g`).
        let theirs = cfg
            .find(|e| !self.own_reset(e) && self.stepped.iter().any(|s| self.resets_other(e, s)));
        // Their reset comes after a pass of this optimizer's own (resets
        // side by side claim nothing).
        let stops: Vec<usize> = self.resets.iter().chain(&self.steps).copied().collect();
        theirs.iter().any(|&z| {
            cfg.forward_path(z, &[b], &self.resets)
                && self.backwards.iter().any(|&o| {
                    o != b && self.after_own_reset(o) && cfg.forward_path(o, &[z], &stops)
                })
        })
    }

    /// Whether `e` resets optimizer `other`: its `zero_grad()`, or that of
    /// the one model it is built over (`net_g.zero_grad()` for `opt_g`).
    fn resets_other(&self, e: &Event, other: &str) -> bool {
        match e {
            Event::Reset(Reset::Optimizer(x)) => same_name(x, other),
            Event::Reset(Reset::Model(m)) => {
                matches!(self.program.reach.models_of(other).as_slice(), [x] if x == m)
            }
            _ => false,
        }
    }

    /// Whether a reset of this optimizer is the last reset before pass `o`
    /// on some way within the iteration.
    fn after_own_reset(&self, o: usize) -> bool {
        let cfg = self.cfg;
        let stops: Vec<usize> = cfg
            .find(|e| matches!(e, Event::Reset(_)))
            .into_iter()
            .chain(self.steps.iter().copied())
            .collect();
        self.resets
            .iter()
            .any(|&r| cfg.forward_path(r, &[o], &stops))
    }

    /// Whether the loop updates tensor `t` by hand from its gradient.
    fn updated_by_hand(&self, t: &str) -> bool {
        self.cfg
            .events
            .iter()
            .flatten()
            .any(|(e, _)| matches!(e, Event::Step(Updater::Tensor(x)) if x == t))
    }

    /// Whether `e` may clear the gradients of `model`'s parameters: anything
    /// but a new tensor, a new optimizer over a model (it clears nothing),
    /// and resets of other optimizers and models known to hold none of them.
    fn may_clear(&self, e: &Event, model: &str) -> bool {
        match e {
            Event::Reset(Reset::NewTensor(_) | Reset::NewModelOptimizer { .. }) => false,
            Event::Reset(Reset::Optimizer(o)) if !self.own_reset(e) => {
                !self.program.reach.only_other_models(o, model)
            }
            Event::Reset(Reset::NewOptimizer(_)) if !self.own_reset(e) => false,
            Event::Reset(Reset::Model(m)) if !self.own_reset(e) => related(m, model),
            // The gradient of a tensor updated by hand (an attack's
            // `delta.grad.zero_()`): an input, not the model's.
            Event::Reset(Reset::Tensor(t)) if !related(t, model) && self.updated_by_hand(t) => {
                false
            }
            Event::Reset(_) | Event::BindStore(_) => true,
            _ => false,
        }
    }

    /// The updater's resets in the loop and those around it, in its
    /// function. A pile-up whose resets all run only around the loop it is
    /// in ([`Cycle::reset_only_around_pile_up`]) counts them as outside.
    fn resets_in_and_outside_loop(
        &self,
        scope: &Scope,
        pile_up: Option<usize>,
    ) -> (Vec<Span>, Vec<Span>) {
        let mut resets_in_loop: Vec<Span> = self.resets.iter().map(|&z| self.cfg.span(z)).collect();
        let mut resets_outside_loop: Vec<Span> = scope
            .around_events
            .iter()
            .filter(|(e, s)| {
                explicit_reset(e)
                    && !scope.loop_span.contains(*s)
                    && resets(self.program, e, self.updater)
            })
            .map(|(_, s)| *s)
            .collect();
        if self.reset_only_around_pile_up(pile_up) {
            resets_outside_loop.append(&mut resets_in_loop);
        }
        (resets_in_loop, resets_outside_loop)
    }

    /// Whether the pile-up at `pile_up` lies inside a nested loop (a
    /// helper's loop the analysed one calls) whose resets all lie outside
    /// it, in the analysed loop, one of them a real reset (not only a new
    /// optimizer): reset only outside that loop (GL002), not nowhere.
    fn reset_only_around_pile_up(&self, pile_up: Option<usize>) -> bool {
        let cfg = self.cfg;
        let Some((node, &inner)) = pile_up.and_then(|n| Some((n, cfg.loops[n].last()?))) else {
            return false;
        };
        let explicit = |z: usize| {
            cfg.events[z]
                .as_ref()
                .is_some_and(|(e, _)| explicit_reset(e))
        };
        let inner_passes: Vec<usize> = self
            .backwards
            .iter()
            .copied()
            .filter(|&b| cfg.loops[b].contains(&inner))
            .collect();
        // At least one written reset (a new optimizer built there too, over
        // the same model, clears nothing).
        self.resets.iter().any(|&z| explicit(z))
            && self.resets.iter().all(|&z| !cfg.loops[z].contains(&inner))
            && !inner_passes.is_empty()
            && cfg.ask(Query {
                blocked: &self.resets,
                need: Some(&inner_passes),
                within: Some(inner),
                ..Query::new(node, &self.steps)
            })
            // And those resets run between two runs of that loop (not in
            // another branch of the analysed loop).
            && cfg.ask(Query {
                need: Some(&self.resets),
                ..Query::new(node, &[node])
            })
    }

    /// Whether another optimizer's gradients are reset in the loop.
    fn others_reset_in_loop(&self) -> bool {
        !self.cfg.find(|e| self.others_reset(e)).is_empty()
    }

    /// Rust/candle: whether the loop sums backward passes into this
    /// updater's `GradStore`.
    fn store_extended_in_loop(&self) -> bool {
        match self.updater {
            Updater::Store(var) => !self
                .cfg
                .find(|e| matches!(e, Event::Extend(v) if v == var))
                .is_empty(),
            _ => false,
        }
    }

    /// Rust/candle: the first step of a `GradStore` bound before the loop
    /// and never bound again (`resets_in_loop`) nor extended in it.
    fn stale_store_step(
        &self,
        scope: &Scope,
        resets_in_loop: &[Span],
        store_extended_in_loop: bool,
    ) -> Option<Span> {
        match self.updater {
            Updater::Store(var) if resets_in_loop.is_empty() && !store_extended_in_loop => {
                let bound_before = scope.function_events.iter().any(|(e, s)| {
                    matches!(e, Event::BindStore(v) if v == var) && s.end <= scope.loop_span.start
                });
                self.steps
                    .first()
                    .filter(|_| bound_before)
                    .map(|&s| self.cfg.span(s))
            }
            _ => None,
        }
    }
}

/// The words of a name's last part (`self.loss_G` -> `g`, `errD` -> `d`,
/// `gen_optimizer` -> `gen`), lowercase, without `generic` words and
/// trailing numbers; none for an expression.
fn name_words(name: &str, generic: &[&str]) -> Vec<String> {
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.is_empty() || !last.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Vec::new();
    }
    let mut words = Vec::new();
    for part in last.split('_') {
        let mut word = String::new();
        let mut after_lower = false;
        for c in part.chars() {
            if c.is_ascii_uppercase() && after_lower {
                words.push(std::mem::take(&mut word));
            }
            after_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            word.push(c.to_ascii_lowercase());
        }
        words.push(word);
    }
    // `loss2`, `opt_d1`: numbers tell copies apart, not networks.
    for w in &mut words {
        w.truncate(w.trim_end_matches(|c: char| c.is_ascii_digit()).len());
    }
    words.retain(|w| !w.is_empty() && !generic.contains(&w.as_str()));
    words
}

#[cfg(test)]
mod tests {
    use super::name_words;

    const LOSS: &[&str] = &["loss", "losses", "err", "error", "total", "l"];

    #[test]
    fn name_words_split_snake_and_camel_case_and_drop_generic_words() {
        assert_eq!(name_words("g_loss", LOSS), ["g"]);
        assert_eq!(name_words("self.loss_G", LOSS), ["g"]);
        assert_eq!(name_words("errD", LOSS), ["d"]);
        assert_eq!(name_words("gen_optimizer", &["optimizer"]), ["gen"]);
        assert_eq!(name_words("optimizerD", &["optimizer"]), ["d"]);
        // An upper-case run stays one word; numbers go.
        assert_eq!(name_words("netGAN_loss2", LOSS), ["net", "gan"]);
        // An expression names nothing.
        assert!(name_words("(g_loss + d_loss)", LOSS).is_empty());
        assert!(name_words("scaler.scale(loss)", LOSS).is_empty());
    }
}
