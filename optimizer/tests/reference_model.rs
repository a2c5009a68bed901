//! Random sequences of backward / accumulate / step / zero_grad / step_with:
//! the guard's anomalies must equal those of a small reference model written
//! here from the design table, and a denied step must change nothing. The
//! reference keeps every pass as a set member (no spans, no counters shared
//! with the guard), so it is a second, independent reading of the rules; the
//! last test checks that the property catches a reference with the old rules.

mod common;

use std::collections::BTreeSet;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use common::{sgd, Toy};
use gradguard::{Check, Error, Level};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Which parameters a loss reaches, and whether `a`'s gradient holds a NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Uses {
    a: bool,
    b: bool,
    nan: bool,
}

#[derive(Debug, Clone)]
enum Op {
    /// `backward` of a loss.
    Backward(Uses),
    /// `accumulate(&store)` of a new store, or of store `reuse % stores`.
    Accumulate {
        uses: Uses,
        reuse: Option<usize>,
    },
    Step,
    ZeroGrad,
    /// `step_with` of a new store, or of store `reuse % stores` (A, B, A).
    StepWith {
        uses: Uses,
        reuse: Option<usize>,
    },
}

fn uses() -> impl Strategy<Value = Uses> {
    (any::<bool>(), any::<bool>(), prop::bool::weighted(0.15)).prop_map(|(a, b, nan)| Uses {
        a,
        b,
        nan: nan && a,
    })
}

fn reuse() -> impl Strategy<Value = Option<usize>> {
    prop::option::weighted(0.4, 0usize..8)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => uses().prop_map(Op::Backward),
        1 => (uses(), reuse()).prop_map(|(uses, reuse)| Op::Accumulate { uses, reuse }),
        3 => Just(Op::Step),
        2 => Just(Op::ZeroGrad),
        2 => (uses(), reuse()).prop_map(|(uses, reuse)| Op::StepWith { uses, reuse }),
    ]
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::Allow), Just(Level::Warn), Just(Level::Deny)]
}

/// A deliberately wrong reference, to prove the property can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    /// The first version's rule: more passes than declared (default 1) is
    /// `accumulated`, whether or not a step applied them.
    CountIsAccumulated,
    /// Only the last store applied is remembered (A, B, A is missed).
    LastStoreOnly,
    /// Count checks per parameter instead of for the whole guard.
    PerParameterCounts,
    /// A NaN from an earlier pass is forgotten by the next pass.
    NaNOnlyFromLastPass,
}

/// A pass: its generation and whether `a`'s gradient in it holds a NaN.
type Pass = (u64, bool);

const NAMES: [&str; 2] = ["layer.a", "layer.b"];
const CHECKS: [Check; 6] = Check::ALL;

/// The reference: every parameter's buffer as the list of passes it holds,
/// and the set of passes a step applied to it.
#[derive(Default)]
struct Reference {
    generation: u64,
    held: [Vec<Pass>; 2],
    applied: [BTreeSet<u64>; 2],
    /// Backward calls into the buffers since the last reset.
    calls: u32,
    /// Stores made so far: what they reach, and their generation once seen.
    stores: Vec<(Uses, Option<u64>)>,
    /// The generation of the last store step_with applied.
    last_store: Option<u64>,
    mutation: Option<Mutation>,
}

type Expected = Vec<(Check, Vec<&'static str>, u32)>;

impl Reference {
    /// The anomalies of a step applying `held` (per parameter), with `calls`
    /// backward calls counted and `declared` passes declared.
    fn judge(
        &self,
        held: [&[Pass]; 2],
        calls: u32,
        declared: Option<u32>,
        store: bool,
    ) -> Expected {
        let m = self.mutation;
        let mut out: Expected = Vec::new();
        let mut push = |check, p: usize, n: u32| match out.iter_mut().find(|e| e.0 == check) {
            Some(e) => {
                e.1.push(NAMES[p]);
                e.2 = e.2.max(n);
            }
            None => out.push((check, vec![NAMES[p]], n)),
        };
        for (p, held) in held.into_iter().enumerate() {
            let passes = held.len() as u32;
            let reapplied = held
                .iter()
                .filter(|(g, _)| {
                    self.applied[p].contains(g)
                        && (m != Some(Mutation::LastStoreOnly)
                            || !store
                            || self.last_store == Some(*g))
                })
                .count() as u32;
            let fresh = passes > reapplied;
            if passes == 0 {
                push(Check::Missing, p, 0);
            } else if !fresh {
                push(Check::Stale, p, passes);
            } else if m == Some(Mutation::CountIsAccumulated) {
                if passes > declared.unwrap_or(1) {
                    push(Check::Accumulated, p, passes);
                }
            } else if reapplied > 0 {
                push(Check::Accumulated, p, passes);
            }
            if fresh {
                let count = if m == Some(Mutation::PerParameterCounts) {
                    passes
                } else {
                    calls
                };
                match declared {
                    Some(k) if count < k => push(Check::ShortAccumulation, p, count),
                    Some(k) if count > k => push(Check::ExcessAccumulation, p, count),
                    _ => {}
                }
            }
            let nan = if m == Some(Mutation::NaNOnlyFromLastPass) {
                held.last().is_some_and(|&(_, nan)| nan)
            } else {
                held.iter().any(|&(_, nan)| nan)
            };
            if nan {
                push(Check::NonFinite, p, 0);
            }
        }
        out.sort_by_key(|e| CHECKS.iter().position(|c| *c == e.0));
        out
    }
}

fn observed(anomalies: &[gradguard::Anomaly]) -> Expected {
    anomalies
        .iter()
        .map(|a| {
            let names: Vec<&'static str> = a
                .params
                .iter()
                .map(|n| if n == NAMES[0] { NAMES[0] } else { NAMES[1] })
                .collect();
            (a.check, names, a.passes)
        })
        .collect()
}

fn loss(toy: &Toy, u: Uses) -> Tensor {
    let mut loss = toy.loss(u.a, u.b);
    if u.nan {
        let nan = Tensor::new(&[f32::NAN, 0., 0.], &Device::Cpu).unwrap();
        let extra = toy.a.as_tensor().mul(&nan).unwrap().sum_all().unwrap();
        loss = (loss + extra).unwrap();
    }
    loss
}

/// Parameter values as bits (a NaN equals itself).
fn bits(toy: &Toy) -> Vec<u32> {
    let (a, b) = toy.values();
    a.into_iter().chain(b).map(f32::to_bits).collect()
}

fn run(
    ops: Vec<Op>,
    declared: Option<u32>,
    levels: [Level; 6],
    mutation: Option<Mutation>,
) -> Result<(), TestCaseError> {
    let toy = Toy::new();
    let mut opt = sgd(&toy).check_nonfinite(1);
    if let Some(k) = declared {
        opt = opt.accumulation_steps(k);
    }
    for (c, l) in CHECKS.iter().zip(levels) {
        opt = opt.level(*c, l);
    }
    let level_of = |c: Check| levels[CHECKS.iter().position(|x| *x == c).unwrap()];
    let mut r = Reference {
        mutation,
        ..Reference::default()
    };
    let mut stores: Vec<GradStore> = Vec::new();
    let mut steps = 0u64;
    // Picks a known store or makes a new one; returns its index.
    let pick =
        |r: &mut Reference, stores: &mut Vec<GradStore>, u: Uses, reuse: Option<usize>| match reuse
        {
            Some(i) if !stores.is_empty() => i % stores.len(),
            _ => {
                stores.push(loss(&toy, u).backward().unwrap());
                r.stores.push((u, None));
                stores.len() - 1
            }
        };

    for op in ops {
        match op {
            Op::Backward(u) => {
                opt.backward(&loss(&toy, u)).unwrap();
                r.generation += 1;
                r.calls += 1;
                for (p, used) in [u.a, u.b].into_iter().enumerate() {
                    if used {
                        r.held[p].push((r.generation, u.nan && p == 0));
                    }
                }
            }
            Op::Accumulate { uses, reuse } => {
                let n = pick(&mut r, &mut stores, uses, reuse);
                opt.accumulate(&stores[n]).unwrap();
                let (u, seen) = r.stores[n];
                let g = match seen {
                    Some(g) if u.a || u.b => g,
                    _ => {
                        r.generation += 1;
                        r.stores[n].1 = Some(r.generation);
                        r.generation
                    }
                };
                r.calls += 1;
                for (p, used) in [u.a, u.b].into_iter().enumerate() {
                    if used {
                        r.held[p].push((g, u.nan && p == 0));
                    }
                }
            }
            Op::ZeroGrad => {
                opt.zero_grad();
                r.held = Default::default();
                r.calls = 0;
            }
            Op::Step => {
                let expected = r.judge([&r.held[0], &r.held[1]], r.calls, declared, false);
                let before = bits(&toy);
                match opt.step() {
                    Ok(report) => {
                        prop_assert!(expected.iter().all(|e| level_of(e.0) != Level::Deny));
                        prop_assert_eq!(observed(&report.anomalies), expected);
                        steps += 1;
                        prop_assert_eq!(report.step, steps);
                        for p in 0..2 {
                            let gens: Vec<u64> = r.held[p].iter().map(|h| h.0).collect();
                            r.applied[p].extend(gens);
                        }
                        r.last_store = None;
                    }
                    Err(Error::Denied(a)) => {
                        let first = expected.iter().find(|e| level_of(e.0) == Level::Deny);
                        prop_assert_eq!(Some(a.check), first.map(|e| e.0));
                        prop_assert_eq!(a.step, steps + 1);
                        prop_assert_eq!(bits(&toy), before);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Op::StepWith { uses, reuse } => {
                let n = pick(&mut r, &mut stores, uses, reuse);
                let (u, seen) = r.stores[n];
                let new = seen.is_none() || !(u.a || u.b);
                let g = if new { r.generation + 1 } else { seen.unwrap() };
                let held: [Vec<Pass>; 2] =
                    [(u.a, u.nan), (u.b, false)]
                        .map(|(used, nan)| if used { vec![(g, nan)] } else { vec![] });
                let expected = r.judge([&held[0], &held[1]], 1, declared, true);
                let before = bits(&toy);
                match opt.step_with(&stores[n]) {
                    Ok(report) => {
                        prop_assert!(expected.iter().all(|e| level_of(e.0) != Level::Deny));
                        prop_assert_eq!(observed(&report.anomalies), expected);
                        steps += 1;
                        prop_assert_eq!(report.step, steps);
                        if new {
                            r.generation += 1;
                            r.stores[n].1 = Some(g);
                        }
                        for (p, held) in held.iter().enumerate() {
                            if !held.is_empty() {
                                r.applied[p].insert(g);
                            }
                        }
                        r.last_store = Some(g);
                    }
                    Err(Error::Denied(a)) => {
                        let first = expected.iter().find(|e| level_of(e.0) == Level::Deny);
                        prop_assert_eq!(Some(a.check), first.map(|e| e.0));
                        prop_assert_eq!(bits(&toy), before);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        prop_assert_eq!(opt.generation(), r.generation);
        prop_assert_eq!(opt.passes_since_reset(), r.calls);
    }
    Ok(())
}

fn declared() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(1u32..4)
}

fn case() -> impl Strategy<Value = (Vec<Op>, Option<u32>, [Level; 6])> {
    (
        proptest::collection::vec(op(), 1..20),
        declared(),
        proptest::array::uniform6(level()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn guard_matches_the_reference_model((ops, declared, levels) in case()) {
        run(ops, declared, levels, None)?;
    }
}

#[test]
fn the_property_catches_every_mutated_reference() {
    for mutation in [
        Mutation::CountIsAccumulated,
        Mutation::LastStoreOnly,
        Mutation::PerParameterCounts,
        Mutation::NaNOnlyFromLastPass,
    ] {
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&case(), |(ops, declared, levels)| {
            run(ops, declared, levels, Some(mutation))
        });
        assert!(
            result.is_err(),
            "{mutation:?}: the guard agreed with a wrong reference"
        );
    }
}
