//! Random sequences of backward / step / zero_grad / step_with: the guard's
//! anomalies must equal those of a small reference model written here from the
//! design table, and a denied step must change nothing.

mod common;

use candle_core::backprop::GradStore;
use common::{sgd, Toy};
use gradguard::{Check, Error, Level};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// `backward` of a loss using a and/or b.
    Backward {
        a: bool,
        b: bool,
    },
    Step,
    ZeroGrad,
    /// `step_with` of a new store (using a and/or b), or of the last store again.
    StepWith {
        a: bool,
        b: bool,
        reuse: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Op::Backward { a, b }),
        3 => Just(Op::Step),
        2 => Just(Op::ZeroGrad),
        2 => (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(a, b, reuse)| Op::StepWith { a, b, reuse }),
    ]
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::Allow), Just(Level::Warn), Just(Level::Deny)]
}

/// The reference: every parameter's gradient as the list of passes it holds.
#[derive(Default)]
struct Reference {
    generation: u64,
    held: [Vec<u64>; 2],
    applied: [Option<u64>; 2],
    /// Per parameter, the store number whose gradient step_with applied last.
    applied_store: [Option<usize>; 2],
}

type Expected = Vec<(Check, Vec<&'static str>, u32)>;

const NAMES: [&str; 2] = ["layer.a", "layer.b"];

impl Reference {
    /// Anomalies of a step whose parameters hold `held` passes, with `fresh`
    /// telling which hold something not yet applied.
    fn judge(held: [&[u64]; 2], fresh: [bool; 2], k: u32) -> Expected {
        let mut out: Expected = Vec::new();
        let mut push = |check, p: usize, n: u32| match out.iter_mut().find(|e| e.0 == check) {
            Some(e) => {
                e.1.push(NAMES[p]);
                e.2 = if check == Check::ShortAccumulation {
                    e.2.min(n)
                } else {
                    e.2.max(n)
                };
            }
            None => out.push((check, vec![NAMES[p]], n)),
        };
        for p in 0..2 {
            let n = held[p].len() as u32;
            if n == 0 {
                push(Check::Missing, p, 0);
            } else if !fresh[p] {
                push(Check::Stale, p, 0);
            } else if n > k {
                push(Check::Accumulated, p, n);
            } else if k > 1 && n < k {
                push(Check::ShortAccumulation, p, n);
            }
        }
        let order = |c: &Check| Check::ALL.iter().position(|x| x == c);
        out.sort_by_key(|e| order(&e.0));
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
            (a.check, names, a.generations)
        })
        .collect()
}

fn run(ops: Vec<Op>, k: u32, levels: [Level; 4]) -> Result<(), TestCaseError> {
    let toy = Toy::new();
    let checks = [
        Check::Accumulated,
        Check::ShortAccumulation,
        Check::Stale,
        Check::Missing,
    ];
    let mut opt = sgd(&toy).accumulation_steps(k);
    for (c, l) in checks.iter().zip(levels) {
        opt = opt.level(*c, l);
    }
    let level_of = |c: Check| levels[checks.iter().position(|x| *x == c).unwrap()];
    let mut r = Reference::default();
    let mut stores: Vec<(GradStore, [bool; 2])> = Vec::new();
    let mut steps = 0u64;

    for op in ops {
        match op {
            Op::Backward { a, b } => {
                opt.backward(&toy.loss(a, b)).unwrap();
                r.generation += 1;
                for (p, used) in [a, b].into_iter().enumerate() {
                    if used {
                        r.held[p].push(r.generation);
                    }
                }
            }
            Op::ZeroGrad => {
                opt.zero_grad();
                r.held = Default::default();
            }
            Op::Step => {
                let fresh = [0, 1].map(|p| {
                    r.held[p]
                        .iter()
                        .max()
                        .is_some_and(|&m| r.applied[p].is_none_or(|a| m > a))
                });
                let expected = Reference::judge([&r.held[0], &r.held[1]], fresh, k);
                let before = toy.values();
                match opt.step() {
                    Ok(report) => {
                        prop_assert!(expected.iter().all(|e| level_of(e.0) != Level::Deny));
                        prop_assert_eq!(observed(&report.anomalies), expected);
                        steps += 1;
                        prop_assert_eq!(report.step, steps);
                        for p in 0..2 {
                            if let Some(&m) = r.held[p].iter().max() {
                                r.applied[p] = Some(r.applied[p].map_or(m, |a| a.max(m)));
                            }
                        }
                    }
                    Err(Error::Denied(a)) => {
                        let first = expected.iter().find(|e| level_of(e.0) == Level::Deny);
                        prop_assert_eq!(Some(a.check), first.map(|e| e.0));
                        prop_assert_eq!(a.step, steps + 1);
                        prop_assert_eq!(toy.values(), before);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Op::StepWith { a, b, reuse } => {
                if !reuse || stores.is_empty() {
                    stores.push((toy.loss(a, b).backward().unwrap(), [a, b]));
                }
                let n = stores.len() - 1;
                let used = stores[n].1;
                let new = [0, 1].map(|p| used[p] && r.applied_store[p] != Some(n));
                let next = r.generation + 1;
                let held: [Vec<u64>; 2] = [0, 1].map(|p| if used[p] { vec![next] } else { vec![] });
                let expected = Reference::judge([&held[0], &held[1]], new, 1);
                let before = toy.values();
                match opt.step_with(&stores[n].0) {
                    Ok(report) => {
                        prop_assert_eq!(observed(&report.anomalies), expected);
                        steps += 1;
                        prop_assert_eq!(report.step, steps);
                        if new.contains(&true) {
                            r.generation += 1;
                        }
                        for p in 0..2 {
                            if new[p] {
                                r.applied[p] = Some(r.generation);
                            }
                            if used[p] {
                                r.applied_store[p] = Some(n);
                            }
                        }
                    }
                    Err(Error::Denied(a)) => {
                        let first = expected.iter().find(|e| level_of(e.0) == Level::Deny);
                        prop_assert_eq!(Some(a.check), first.map(|e| e.0));
                        prop_assert_eq!(toy.values(), before);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        prop_assert_eq!(opt.generation(), r.generation);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn guard_matches_the_reference_model(
        ops in proptest::collection::vec(op(), 1..16),
        k in 1u32..4,
        levels in proptest::array::uniform4(level()),
    ) {
        run(ops, k, levels)?;
    }
}
