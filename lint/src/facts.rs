//! What the rules read: for every loop and every updater stepped in it, the
//! facts of its gradient life cycle, computed on the loop's graph.

use std::collections::BTreeSet;

use crate::cfg::{Cfg, Query};
use crate::ir::{same_name, Counter, Event, Function, Node, Program, Reset, Span, Updater};

/// The facts of one updater in one loop.
#[derive(Debug, Clone)]
pub struct LoopFacts {
    /// The updater (optimizer, manual update, GradStore).
    pub updater: Updater,
    /// The loop.
    pub loop_span: Span,
    /// Its steps in the loop (first one first).
    pub steps: Vec<Span>,
    /// A step after which a path reaches a step again through a backward
    /// pass and no reset: gradients pile up.
    pub pile_up_step: Option<Span>,
    /// When the pile-up happens only with a window of one: the setting
    /// (`args.gradient_accumulation_steps`) that is then 1.
    pub pile_up_window_of_one: Option<String>,
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
        (Reset::Model(m), Updater::Tensor(t)) => t.starts_with(&format!("{m}.")),
        (Reset::Optimizer(_) | Reset::NewOptimizer(_), Updater::Tensor(_)) => false,
        (Reset::Optimizer(a) | Reset::NewOptimizer(a), Updater::Optimizer(b)) => same_name(a, b),
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
                    same_name(model, m)
                        || model.starts_with(&format!("{m}."))
                        || m.starts_with(&format!("{model}."))
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
            Node::Break | Node::Continue | Node::Return | Node::Raise | Node::Set(..) => {}
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
            out.push(facts(
                program,
                &cfg,
                &backwards,
                &scope,
                updater,
                optimizers_in_loop,
            ));
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

fn facts(
    program: &Program,
    cfg: &Cfg,
    backwards: &[usize],
    scope: &Scope,
    updater: Updater,
    optimizers_in_loop: usize,
) -> LoopFacts {
    let Scope {
        function_events,
        around_events,
        loop_span,
    } = *scope;
    let steps = cfg.find(|e| matches!(e, Event::Step(u) if *u == updater));
    // A reset of an optimizer this loop never steps, named like the one it
    // steps (`self.opt.step()`, `self.learn.opt.zero_grad()`; a property
    // `optimizer` over `self._optimizer`): the same object reached another
    // way.
    let stepped: Vec<&str> = cfg
        .events
        .iter()
        .flatten()
        .filter_map(|(e, _)| match e {
            Event::Step(Updater::Optimizer(o)) => Some(o.as_str()),
            _ => None,
        })
        .collect();
    let last = |s: &str| {
        let l = s.rsplit('.').next().unwrap_or(s);
        l.trim_start_matches('_').to_string()
    };
    let own_reset = |e: &Event| {
        resets(program, e, &updater)
            || match (e, &updater) {
                (Event::Reset(Reset::Optimizer(a)), Updater::Optimizer(b)) => {
                    last(a) == last(b) && !stepped.contains(&a.as_str())
                }
                _ => false,
            }
    };
    let reset_nodes = cfg.find(own_reset);
    // Another optimizer's reset (a new tensor resets nobody else).
    let others_reset = |e: &Event| {
        matches!(e, Event::Reset(r) if !matches!(r, Reset::NewTensor(_))) && !own_reset(e)
    };
    let head = cfg.head;

    // Resets that clear gradients the step would apply: a new optimizer
    // (over fresh tensors) has none to clear, and `p.grad = None` on some
    // parameters between backward and step drops them on purpose.
    // A submodule's `zero_grad()` (`self.model.base.zero_grad()` between
    // backward and step) freezes that part on purpose, like `p.grad = None`.
    let clearing: Vec<usize> = reset_nodes
        .iter()
        .copied()
        .filter(|&z| match &cfg.events[z] {
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
        .collect();

    // With several optimizers, which parameters a backward pass reaches is
    // not known: a pass counts for this one unless another optimizer's
    // reset or step lies on every way from it to this one's steps (it
    // belongs to that optimizer's cycle).
    let others_resets: Vec<usize> = if optimizers_in_loop >= 2 {
        // Steps taken together (`opt_a.step(); opt_b.step()`, no backward
        // pass or reset between) share the passes before them.
        let all_resets = cfg.find(|e| matches!(e, Event::Reset(_)));
        let between: Vec<usize> = all_resets.iter().chain(backwards).copied().collect();
        // Always together: every way on from the first reaches the second
        // before a backward pass, a reset or the end of the iteration (not
        // only when some test holds).
        let always = |from: usize, to: &[usize]| {
            let escape: Vec<usize> = between.iter().copied().chain([head]).collect();
            cfg.forward_path(from, to, &between)
                && !cfg.ask(Query {
                    blocked: to,
                    ..Query::new(from, &escape)
                })
        };
        let together = |t: usize| always(t, &steps) || steps.iter().any(|&s| always(s, &[t]));
        cfg.find(|e| match e {
            Event::Reset(_) => others_reset(e),
            Event::Step(u) => *u != updater,
            _ => false,
        })
        .into_iter()
        .filter(|&t| !matches!(&cfg.events[t], Some((Event::Step(_), _))) || !together(t))
        .collect()
    } else {
        Vec::new()
    };
    let own_backwards: Vec<usize> = backwards
        .iter()
        .copied()
        .filter(|&b| {
            others_resets.is_empty()
                || cfg.ask(Query {
                    blocked: &others_resets,
                    ..Query::new(b, &steps)
                })
        })
        .collect();
    let backwards_for_accumulation: &[usize] = &own_backwards;

    let pile_up = |window_of_one: bool| {
        steps
            .iter()
            .find(|&&s| {
                cfg.ask(Query {
                    blocked: &reset_nodes,
                    need: Some(&own_backwards),
                    window_of_one,
                    ..Query::new(s, &steps)
                })
            })
            .copied()
    };
    // A window length that is a setting may be 1 (its usual default): then
    // a reset tested off the window's boundary never runs.
    let (pile_up_node, pile_up_window_of_one) = match (pile_up(false), cfg.window_setting()) {
        (Some(s), _) => (Some(s), None),
        (None, Some(k)) => match pile_up(true) {
            Some(s) => (Some(s), Some(k.to_string())),
            None => (None, None),
        },
        (None, None) => (None, None),
    };

    // In program order within one iteration (no loop closes): backward,
    // reset, step, and no backward between the reset and the step; the same
    // flags hold all the way.
    // Only this optimizer's passes: a proximal optimizer reset and stepped
    // after another optimizer's step applies no pass on purpose.
    let reset_between_backward_and_step = clearing
        .iter()
        .find(|&&z| {
            own_backwards.iter().any(|&b| {
                // A step before the reset applied the pass already (a
                // final step after the loop then has nothing to apply).
                cfg.ask(Query {
                    need: Some(&[z]),
                    blocked_after_need: backwards,
                    blocked_before_need: &steps,
                    back: false,
                    ..Query::new(b, &steps)
                })
            })
        })
        .map(|&z| cfg.span(z));

    // After a step, a backward pass cleared before any step applied it,
    // while some iteration passes a backward and no step: accumulation
    // defeated. A pass a skip (non-finite loss) left out is meant to be
    // dropped, `accelerator.accumulate` gates its resets, and a reset
    // outside the loops of the step (once per fold, per epoch) starts a
    // new run rather than cutting a window.
    let step_is_conditional = cfg.ask(Query {
        blocked: &steps,
        need: Some(backwards_for_accumulation),
        avoid_skips: true,
        ..Query::new(head, &[head])
    });
    // An optimizer stepped in `accelerator.accumulate` is a prepared one.
    let prepared = steps.iter().any(|&s| cfg.in_accumulate[s]);
    // Passes meant to add up: some way takes them to a step with no reset
    // on it (an attack's or a probe's pass, always cleared before this
    // optimizer's own pass and step, is not accumulation).
    let accumulating: Vec<usize> = backwards_for_accumulation
        .iter()
        .copied()
        .filter(|&b| {
            cfg.ask(Query {
                blocked: &reset_nodes,
                ..Query::new(b, &steps)
            })
        })
        .collect();
    let reset_discarding_accumulation = clearing
        .iter()
        .find(|&&z| {
            // `accelerator.accumulate` skips a prepared optimizer's reset
            // until the window closes (also right after the block: the
            // window's state outlives it), not a model's or parameters' reset.
            // (Inside the block the graph ties it to the window's end.)
            // Under DeepSpeed it does nothing at all.
            let gated = prepared
                && (!cfg.in_accumulate[z] || program.deepspeed)
                && matches!(&cfg.events[z], Some((Event::Reset(Reset::Optimizer(_)), _)));
            // Some iteration of the loop around the reset passes a backward
            // and no step (in a micro-batch loop, every one does).
            let conditional = match cfg.loops[z].last() {
                None => step_is_conditional,
                Some(&l) => {
                    cfg.ask(Query {
                        blocked: &steps,
                        need: Some(backwards_for_accumulation),
                        avoid_skips: true,
                        within: Some(l),
                        ..Query::new(l, &[l])
                    })
                    // And a pass of that loop reaches a step with no reset
                    // on the way: passes meant to add up, not probes (a
                    // gradient read per objective, cleared before the
                    // real backward pass).
                    && backwards_for_accumulation.iter().any(|&b| {
                        cfg.loops[b].contains(&l)
                            && cfg.ask(Query {
                                blocked: &reset_nodes,
                                back: false,
                                ..Query::new(b, &steps)
                            })
                    })
                }
            };
            if !conditional || gated {
                return false;
            }
            let outside = cfg.outside_loop_of(z);
            // Over a window as long as the run, the run's start opens it:
            // a pass of an earlier iteration cleared in a later one by a
            // reset the window's tests do not guard.
            let from_start = cfg.whole_run
                && !cfg.guards[z]
                    .iter()
                    .any(|&(c, _)| matches!(cfg.conds[c].kind, crate::cfg::Kind::Counter(..)))
                && cfg.ask(Query {
                    blocked: &steps,
                    need: Some(&accumulating),
                    need_then_next_iteration: true,
                    avoid_skips: true,
                    ..Query::new(head, &[z])
                });
            from_start
                || steps.iter().any(|&s| {
                    cfg.within_loops_of(z, s)
                        && cfg.ask(Query {
                            blocked: &steps,
                            need: Some(&accumulating),
                            avoid_skips: true,
                            // A new run of the loop (next epoch, next fold)
                            // starts a new window.
                            within: cfg.common_loop(s, z),
                            blocked_after_need: &outside,
                            ..Query::new(s, &[z])
                        })
                })
        })
        .map(|&z| cfg.span(z));

    // A pass whose step a skip left out reaches the next iteration with no
    // reset, and a step there applies it.
    let skips = cfg.skip_nodes(&steps);
    let skipped_pass_applied = if skips.is_empty() {
        None
    } else {
        steps
            .iter()
            .find(|&&s| {
                backwards.iter().any(|&b| {
                    cfg.ask(Query {
                        blocked: &reset_nodes,
                        need: Some(&skips),
                        blocked_before_need: &steps,
                        // The skip leaves out this pass's own step.
                        need_in_first_iteration: true,
                        need_then_next_iteration: true,
                        ..Query::new(b, &[s])
                    })
                })
            })
            .map(|&s| cfg.span(s))
    };

    let mut resets_in_loop: Vec<Span> = reset_nodes.iter().map(|&z| cfg.span(z)).collect();
    let others_reset_in_loop = !cfg.find(others_reset).is_empty();
    let mut resets_outside_loop: Vec<Span> = around_events
        .iter()
        .filter(|(e, s)| {
            explicit_reset(e) && !loop_span.contains(*s) && resets(program, e, &updater)
        })
        .map(|(_, s)| *s)
        .collect();
    // A pile-up inside a nested loop (a helper's loop the analysed one
    // calls) whose resets all lie outside it, in the analysed loop, and are
    // real resets (not a new optimizer): reset only outside that loop
    // (GL002), not nowhere.
    if let Some((node, &inner)) = pile_up_node.and_then(|n| Some((n, cfg.loops[n].last()?))) {
        let explicit = |z: usize| {
            cfg.events[z]
                .as_ref()
                .is_some_and(|(e, _)| explicit_reset(e))
        };
        let inner_passes: Vec<usize> = backwards
            .iter()
            .copied()
            .filter(|&b| cfg.loops[b].contains(&inner))
            .collect();
        let outside = !reset_nodes.is_empty()
            && reset_nodes
                .iter()
                .all(|&z| explicit(z) && !cfg.loops[z].contains(&inner))
            && !inner_passes.is_empty()
            && cfg.ask(Query {
                blocked: &reset_nodes,
                need: Some(&inner_passes),
                within: Some(inner),
                ..Query::new(node, &steps)
            })
            // And those resets run between two runs of that loop (not in
            // another branch of the analysed loop).
            && cfg.ask(Query {
                need: Some(&reset_nodes),
                ..Query::new(node, &[node])
            });
        if outside {
            resets_outside_loop.append(&mut resets_in_loop);
        }
    }

    let store_extended_in_loop = match &updater {
        Updater::Store(var) => !cfg
            .find(|e| matches!(e, Event::Extend(v) if v == var))
            .is_empty(),
        _ => false,
    };
    let stale_store_step = match &updater {
        Updater::Store(var) if resets_in_loop.is_empty() && !store_extended_in_loop => {
            let bound_before = function_events.iter().any(|(e, s)| {
                matches!(e, Event::BindStore(v) if v == var) && s.end <= loop_span.start
            });
            steps.first().filter(|_| bound_before).map(|&s| cfg.span(s))
        }
        _ => None,
    };

    LoopFacts {
        steps: steps.iter().map(|&s| cfg.span(s)).collect(),
        updater,
        loop_span,
        pile_up_step: pile_up_node.map(|n| cfg.span(n)),
        pile_up_window_of_one,
        resets_in_loop,
        resets_outside_loop,
        optimizers_in_loop,
        others_reset_in_loop,
        reset_between_backward_and_step,
        reset_discarding_accumulation,
        stale_store_step,
        store_extended_in_loop,
        skipped_pass_applied,
    }
}
