//! Python branch conditions, normalised and classified for the analysis:
//! accumulation counters (`(step + 1) % k == 0`), skips on a non-finite or
//! out-of-range value (`torch.isnan(loss)`, `grad_norm > max_norm`) and flags
//! (`args.use_sgd`, `cfg.optim == "adam"`). Anything else is left out.

use ruff_python_ast::{self as ast, BoolOp, CmpOp, Expr, Number, Operator, UnaryOp};
use ruff_text_size::Ranged;

use crate::ir::{Cond, CondClass, Residue, Test, Tested};

/// `a.b.c` for names and attribute chains.
fn dotted(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Name(n) => Some(n.id.to_string()),
        Expr::Attribute(a) => Some(format!("{}.{}", dotted(&a.value)?, a.attr.id)),
        _ => None,
    }
}

/// The source text of `expr` without whitespace: the condition's key.
pub fn key(source: &str, expr: &Expr) -> String {
    let r = expr.range();
    source
        .get(r.start().to_usize()..r.end().to_usize())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

fn int(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::NumberLiteral(n) => match &n.value {
            Number::Int(i) => i.as_i64(),
            _ => None,
        },
        Expr::UnaryOp(u) if u.op == UnaryOp::USub => int(&u.operand).and_then(i64::checked_neg),
        _ => None,
    }
}

/// What an `if`/`elif` test tells of the classified conditions: the whole
/// test when it is one of the classes the analysis uses; besides, the counter
/// and window tests among the operands of `and` and `or`, as alternatives
/// (`i % k == 1 or k == 1` holds: one or the other). `named` gives the
/// expression a local name was bound to once (`do_step = (i + 1) % k == 0`
/// ... `if do_step:`).
pub fn classify<'e>(
    source: &str,
    test: &'e Expr,
    named: &dyn Fn(&str) -> Option<&'e Expr>,
    run_length: &dyn Fn(&str) -> Option<String>,
    length: &dyn Fn(&str) -> Option<String>,
    equality: &dyn Fn(&str, usize) -> Option<Equality>,
) -> Tested {
    let lookups = Lookups {
        named,
        run_length,
        length,
        equality,
    };
    classify_within(source, test, &lookups, MAX_DEPTH)
}

/// What the classifier asks of the code around a test.
struct Lookups<'l, 'e> {
    /// The expression a local name was bound to once.
    named: &'l dyn Fn(&str) -> Option<&'e Expr>,
    /// The run's length of a loop variable over `range(n)`.
    run_length: &'l dyn Fn(&str) -> Option<String>,
    /// The length a local name was bound to once (`n = len(loader)`:
    /// `len(loader)`).
    length: &'l dyn Fn(&str) -> Option<String>,
    /// Whether a name is an equality counter, as a test at this byte offset
    /// sees it.
    equality: &'l dyn Fn(&str, usize) -> Option<Equality>,
}

/// How deep `and`/`or` operands and local names are followed (a name may be
/// bound to an expression that reads it: `done = done or ...`).
const MAX_DEPTH: u32 = 4;

fn classify_within<'e>(
    source: &str,
    test: &'e Expr,
    lookups: &Lookups<'_, 'e>,
    depth: u32,
) -> Tested {
    let (expr, negated) = unwrap(test, lookups.named);
    let mut tested = match expr {
        Expr::BoolOp(b) if depth > 0 => {
            let mut parts = b.values.iter().map(|operand| {
                operands_tests(classify_within(source, operand, lookups, depth - 1))
            });
            let first = parts.next().unwrap_or_default();
            let mut holds = first.holds;
            let mut fails = first.fails;
            for part in parts {
                if b.op == BoolOp::And {
                    holds = Tested::both(&holds, &part.holds);
                    fails = Tested::either(&fails, &part.fails);
                } else {
                    holds = Tested::either(&holds, &part.holds);
                    fails = Tested::both(&fails, &part.fails);
                }
            }
            if negated {
                std::mem::swap(&mut holds, &mut fails);
            }
            Tested { holds, fails }
        }
        _ => Tested::default(),
    };
    if let Some(whole) = classify_one(source, test, lookups) {
        let flipped = whole.flipped();
        for alternative in &mut tested.holds {
            alternative.push(whole.clone());
        }
        for alternative in &mut tested.fails {
            alternative.push(flipped.clone());
        }
    }
    tested
}

/// An operand's tests that the analysis relates across a boolean operator:
/// counter and window tests, and tests always true for the analysis (flags
/// are correlated as whole tests).
fn operands_tests(mut tested: Tested) -> Tested {
    // A bare name too (`if optim_disc and optim_gen:`): a flag the loop may
    // set (`optim_gen = False` under a loss check), known by its name.
    let keep = |t: &Test| match &t.cond.class {
        CondClass::Counter { .. } | CondClass::WindowOne(_) | CondClass::Always => true,
        // So is a setting read from a dict (`cfg["amp"]`, `cfg.get("amp")`).
        // And a setting's presence (`hasattr(args, "accum")`).
        CondClass::Flag(_) if t.cond.key.starts_with("hasattr(") => true,
        CondClass::Flag(reads) => match reads.as_slice() {
            [r] if *r == t.cond.key => !r.contains('.'),
            [r] => t
                .cond
                .key
                .strip_prefix(r.as_str())
                .is_some_and(|rest| rest.starts_with('[') || rest.starts_with(".get(")),
            _ => false,
        },
        _ => false,
    };
    for alternative in tested.holds.iter_mut().chain(tested.fails.iter_mut()) {
        alternative.retain(keep);
    }
    // Weakened alternatives may now assume nothing, which absorbs the rest.
    for side in [&mut tested.holds, &mut tested.fails] {
        if side.iter().any(Vec::is_empty) {
            *side = vec![Vec::new()];
        }
    }
    tested
}

/// The test under `not`s and local names: the expression and whether it is
/// negated.
fn unwrap<'e>(test: &'e Expr, named: &dyn Fn(&str) -> Option<&'e Expr>) -> (&'e Expr, bool) {
    let mut expr = test;
    let mut negated = false;
    for _ in 0..4 * MAX_DEPTH {
        match expr {
            Expr::UnaryOp(u) if u.op == UnaryOp::Not => {
                negated = !negated;
                expr = &u.operand;
            }
            Expr::Name(n) => match named(n.id.as_str()) {
                Some(bound) => expr = bound,
                None => break,
            },
            _ => break,
        }
    }
    (expr, negated)
}

/// Classifies a whole test; `None` when it is none of the classes.
fn classify_one<'e>(source: &str, test: &'e Expr, lookups: &Lookups<'_, 'e>) -> Option<Test> {
    let (expr, negated) = unwrap(test, lookups.named);
    // A test of an equality counter is a counter test only where the model
    // of that counter says what it holds; never a `%` test as written.
    let counted = match equality_counter(source, expr, lookups.equality) {
        Some(found) => found,
        None => counter(source, expr, 0),
    };
    if let Some((cond, neg)) = counted {
        return Some(Test {
            cond,
            negated: negated ^ neg,
        });
    }
    if let Some((cond, neg)) = first_or_last(source, expr, lookups) {
        return Some(Test {
            cond,
            negated: negated ^ neg,
        });
    }
    if let Some((cond, neg)) = window_one(source, expr) {
        return Some(Test {
            cond,
            negated: negated ^ neg,
        });
    }
    if let Expr::Compare(c) = expr {
        let none = matches!(c.comparators.first(), Some(Expr::NoneLiteral(_)));
        if c.ops.len() == 1 && none && matches!(c.ops[0], CmpOp::Is | CmpOp::IsNot) {
            // `p.grad is not None`, `params[0].grad is not None`: a
            // gradient, however reached, always there for the analysis.
            let text = key(source, &c.left);
            let class = if text.ends_with(".grad") {
                Some(CondClass::Always)
            } else {
                dotted(&c.left).map(CondClass::NotNone)
            };
            if let Some(class) = class {
                return Some(Test {
                    cond: Cond {
                        key: format!("{text}isnotNone"),
                        class,
                    },
                    negated: negated ^ (c.ops[0] == CmpOp::Is),
                });
            }
        }
    }
    // `p.requires_grad`: a parameter that does not require a gradient has
    // none to reset or apply, so, like `p.grad is not None`, always true
    // for the analysis.
    if let Expr::Attribute(a) = expr {
        if a.attr.id.as_str() == "requires_grad" {
            return Some(Test {
                cond: Cond {
                    key: format!("{}requires_grad", key(source, &a.value)),
                    class: CondClass::Always,
                },
                negated,
            });
        }
    }
    if let Some(abnormal_when_true) = skip(expr) {
        return Some(Test {
            cond: Cond {
                key: key(source, expr),
                class: CondClass::Skip,
            },
            negated: negated ^ !abnormal_when_true,
        });
    }
    let mut reads = Vec::new();
    if flag(expr, &mut reads) && !reads.is_empty() {
        return Some(Test {
            cond: Cond {
                key: key(source, expr),
                class: CondClass::Flag(reads),
            },
            negated,
        });
    }
    // A name bound once holds one value between its tests in an iteration
    // (`if need_update: step` ... `if not need_update: continue`).
    // Keyed by the name, which a function nested in this one reads too.
    if let Some(name) = bound_name(test, lookups.named) {
        return Some(Test {
            cond: Cond {
                key: name.to_string(),
                class: CondClass::Bound,
            },
            negated,
        });
    }
    None
}

/// The name the test is, under its `not`s, when it is a local name bound
/// once.
fn bound_name<'e>(test: &'e Expr, named: &dyn Fn(&str) -> Option<&'e Expr>) -> Option<&'e str> {
    let mut expr = test;
    while let Expr::UnaryOp(u) = expr {
        if u.op != UnaryOp::Not {
            return None;
        }
        expr = &u.operand;
    }
    match expr {
        Expr::Name(n) if named(n.id.as_str()).is_some() => Some(n.id.as_str()),
        _ => None,
    }
}

/// `k == 1`, `k != 1`, `k > 1`, `k >= 2`, `k <= 1`, `k < 2` on a name or
/// attribute `k` (a window length, if a counter is taken modulo it): the
/// condition `k == 1`, and whether the test holds when it is false.
fn window_one(source: &str, expr: &Expr) -> Option<(Cond, bool)> {
    let Expr::Compare(c) = expr else { return None };
    if c.ops.len() != 1 || c.comparators.len() != 1 {
        return None;
    }
    let (name, value, op) = match (dotted(&c.left), int(&c.comparators[0])) {
        (Some(_), Some(v)) => (c.left.as_ref(), v, c.ops[0]),
        _ => {
            // `1 == k`, `1 < k`: the mirrored comparison.
            dotted(&c.comparators[0])?;
            let v = int(&c.left)?;
            let mirrored = match c.ops[0] {
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::LtE => CmpOp::GtE,
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::GtE => CmpOp::LtE,
                op => op,
            };
            (&c.comparators[0], v, mirrored)
        }
    };
    // Window lengths are at least 1: `> 1`, `>= 2` and `!= 1` say the same.
    let is_one_when = match (op, value) {
        (CmpOp::Eq, 1) | (CmpOp::LtE, 1) | (CmpOp::Lt, 2) => true,
        (CmpOp::NotEq, 1) | (CmpOp::Gt, 1) | (CmpOp::GtE, 2) => false,
        _ => return None,
    };
    let modulus = key(source, name);
    Some((
        Cond {
            key: format!("{modulus}==1"),
            class: CondClass::WindowOne(modulus),
        },
        !is_one_when,
    ))
}

/// `i == 0` and `i == n - 1` (`i + 1 == n`) where `i` runs over
/// `range(n)` (or `enumerate(x)`, `n` = `len(x)`, also through a name bound
/// to it): `i % n` at the start or the end of the run, a window as long as
/// the loop (accumulate over the whole run).
fn first_or_last(source: &str, expr: &Expr, lookups: &Lookups) -> Option<(Cond, bool)> {
    let run_length = lookups.run_length;
    let Expr::Compare(c) = expr else { return None };
    if c.ops.len() != 1 || c.comparators.len() != 1 {
        return None;
    }
    let negated = match c.ops[0] {
        CmpOp::Eq => false,
        CmpOp::NotEq => true,
        _ => return None,
    };
    // `i` or `i + 1`, the loop's variable.
    let counted = |e: &Expr| match e {
        Expr::BinOp(b) if b.op == Operator::Add && int(&b.right) == Some(1) => {
            Some((dotted(&b.left)?, 1))
        }
        e => Some((dotted(e)?, 0)),
    };
    let ((var, offset), other) = match (counted(&c.left), counted(&c.comparators[0])) {
        (Some((v, o)), _) if run_length(&v).is_some() => ((v, o), &c.comparators[0]),
        (_, Some((v, o))) if run_length(&v).is_some() => ((v, o), c.left.as_ref()),
        _ => return None,
    };
    let n = run_length(&var)?;
    let is_n = |e: &Expr| {
        key(source, e) == n
            || matches!(e, Expr::Name(name) if (lookups.length)(name.id.as_str()).as_deref() == Some(n.as_str()))
    };
    let residue = match (offset, other) {
        (0, e) if int(e) == Some(0) => Residue::Low(0),
        (0, Expr::BinOp(b))
            if b.op == Operator::Sub && is_n(&b.left) && int(&b.right) == Some(1) =>
        {
            Residue::High(1)
        }
        (1, e) if is_n(e) => Residue::High(1),
        _ => return None,
    };
    Some((
        Cond {
            key: format!("{var}%{n}=={residue:?}"),
            class: CondClass::Counter {
                counter: var,
                modulus: n,
                residue,
                at_one: true,
                whole_run: true,
            },
        },
        negated,
    ))
}

/// `name`, `name + c`, `name - c`: the counter and its offset.
fn counter_offset(expr: &Expr) -> Option<(String, i64)> {
    match expr {
        Expr::BinOp(b) if b.op == Operator::Add => match (dotted(&b.left), int(&b.right)) {
            (Some(n), Some(c)) => Some((n, c)),
            _ => Some((dotted(&b.right)?, int(&b.left)?)),
        },
        Expr::BinOp(b) if b.op == Operator::Sub => {
            Some((dotted(&b.left)?, int(&b.right)?.checked_neg()?))
        }
        _ => Some((dotted(expr)?, 0)),
    }
}

/// `(counter + c) % k`: the counter, its offset, and `k`'s key.
fn modulo(source: &str, expr: &Expr) -> Option<(String, i64, String)> {
    let Expr::BinOp(b) = expr else { return None };
    if b.op != Operator::Mod {
        return None;
    }
    let (counter, offset) = counter_offset(&b.left)?;
    Some((counter, offset, key(source, &b.right)))
}

/// A test of `counter % 1`, which is always 0.
fn always(counter: &str) -> Cond {
    Cond {
        key: format!("{counter}%1==0"),
        class: CondClass::Always,
    }
}

/// The condition `counter % modulus` at `residue` (`at_one`: whether it
/// holds when the window length is 1), and whether the test holds when it
/// is false.
fn counter_test(
    counter: String,
    modulus: String,
    residue: Residue,
    negated: bool,
    at_one: bool,
) -> (Cond, bool) {
    let never_at_one = if at_one { "" } else { "|k>1" };
    let key = format!("{counter}%{modulus}=={residue:?}{never_at_one}");
    (
        Cond {
            key,
            class: CondClass::Counter {
                counter,
                modulus,
                residue,
                at_one,
                whole_run: false,
            },
        },
        negated,
    )
}

/// A counter test, and whether the test holds when the counter is *not* at
/// the residue (`!=`, a bare `i % k`). `shift` is how far the counter as
/// the test reads it is ahead of the counter the analysis tracks (1 for a
/// test after the iteration's increment of an equality counter).
fn counter(source: &str, expr: &Expr, shift: i64) -> Option<(Cond, bool)> {
    // `at_one`: whether the test holds when `k` is 1 (`x % 1` is 0, so it
    // holds when the compared value is 0: `(i - 1) % k == 0` holds, `i % k
    // == 1` does not, though both are `Low(1)` for longer windows).
    let make = |counter: String, modulus: String, value: i64, negated: bool, at_one: bool| {
        let value = value.checked_sub(shift)?;
        Some(counter_test(
            counter,
            modulus,
            Residue::of(value),
            negated,
            at_one,
        ))
    };
    match expr {
        Expr::Compare(c) if c.ops.len() == 1 && c.comparators.len() == 1 => {
            let negated = match c.ops[0] {
                CmpOp::Eq => false,
                CmpOp::NotEq => true,
                _ => return None,
            };
            let (side, other) = match modulo(source, &c.left) {
                Some(m) => (m, &c.comparators[0]),
                None => (modulo(source, &c.comparators[0])?, c.left.as_ref()),
            };
            let (name, offset, modulus) = side;
            // `== n` or `== k - n`.
            let (target, at_one) = match int(other) {
                Some(v) => (v, v == 0),
                None => match other {
                    Expr::BinOp(b) if b.op == Operator::Sub && key(source, &b.left) == modulus => {
                        let n = int(&b.right)?;
                        (n.checked_neg()?, n == 1)
                    }
                    _ => return None,
                },
            };
            if modulus == "1" {
                // `x % 1` is 0: the test holds exactly when 0 is its target.
                return Some((always(&name), negated ^ (target != 0)));
            }
            make(name, modulus, target.checked_sub(offset)?, negated, at_one)
        }
        // `if i % k:` holds when the counter is off the boundary.
        Expr::BinOp(_) => {
            let (name, offset, modulus) = modulo(source, expr)?;
            if modulus == "1" {
                // `if i % 1:` never holds.
                return Some((always(&name), true));
            }
            make(name, modulus, offset.checked_neg()?, true, true)
        }
        _ => None,
    }
}

/// Where a test of an equality counter runs in its iteration. The counter
/// `x` counts iterations modulo a window length `k`: a loop body advances
/// it once per iteration (`x += 1`) and sets it back to 0 in the branch that
/// sees it reach `k` (`if x == k: ...; x = 0`). The analysis tracks `p`,
/// the iteration's place in its window (`x` when the iteration starts, 0 to
/// `k - 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Before the increment: `x` is `p`.
    BeforeIncrement,
    /// After the increment and before the reset (the test of the branch
    /// that resets included): `x` is `p + 1`, 1 to `k`.
    BeforeReset,
    /// After the branch that resets: `x` is `(p + 1) % k`, 0 to `k - 1`.
    AfterReset,
}

/// An equality counter, as a test at some place sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equality {
    /// The window length's key (the text of `k`).
    pub modulus: String,
    /// Where the test runs; `None` where the model says nothing of the
    /// counter (in the resetting branch after the reset, outside the loop
    /// body).
    pub zone: Option<Zone>,
}

/// What a test compares an equality counter with: `c`, or `k - c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Int(i64),
    WindowMinus(i64),
}

/// A test of an equality counter (`x == 0`, `x == k`, `x >= k`, `x % k ==
/// 0`, `if x:`): `Some` when `expr` tests one; inside, the condition on the
/// iteration's place in the window and whether the test holds when it is
/// false, or `None` when the model cannot say (a test that never holds
/// where it runs, another modulus, an unmodelled place).
fn equality_counter(
    source: &str,
    expr: &Expr,
    equality: &dyn Fn(&str, usize) -> Option<Equality>,
) -> Option<Option<(Cond, bool)>> {
    let at = expr.range().start().to_usize();
    let of = |e: &Expr| dotted(e).and_then(|n| Some((equality(&n, at)?, n)));
    let modular = |e: &Expr| modulo(source, e).and_then(|(n, _, m)| Some((equality(&n, at)?, m)));
    // `x % k == r`, `if x % k:`: the `%` test, shifted after the increment
    // (`x % k` is then `(p + 1) % k` whether or not the reset ran).
    let modular_side = match expr {
        Expr::BinOp(_) => modular(expr),
        Expr::Compare(c) if c.ops.len() == 1 && c.comparators.len() == 1 => {
            modular(&c.left).or_else(|| modular(&c.comparators[0]))
        }
        _ => None,
    };
    if let Some((eq, modulus)) = modular_side {
        let Some(zone) = eq.zone else {
            return Some(None);
        };
        // Modulo another length, the counter (which goes back to 0 at its
        // own) says nothing.
        if modulus != eq.modulus {
            return Some(None);
        }
        let shift = if zone == Zone::BeforeIncrement { 0 } else { 1 };
        return Some(counter(source, expr, shift));
    }
    // `if x:` holds when `x != 0`.
    if let Some((eq, name)) = of(expr) {
        return Some(
            eq.zone
                .and_then(|zone| equality_cond(name, &eq.modulus, zone, Target::Int(0), true)),
        );
    }
    let Expr::Compare(c) = expr else { return None };
    if c.ops.len() != 1 || c.comparators.len() != 1 {
        return None;
    }
    let ((eq, name), op, other) = match (of(&c.left), of(&c.comparators[0])) {
        (Some(found), _) => (found, c.ops[0], &c.comparators[0]),
        (None, Some(found)) => {
            let mirrored = match c.ops[0] {
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::LtE => CmpOp::GtE,
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::GtE => CmpOp::LtE,
                op => op,
            };
            (found, mirrored, c.left.as_ref())
        }
        (None, None) => return None,
    };
    let Some(zone) = eq.zone else {
        return Some(None);
    };
    let target = if key(source, other) == eq.modulus {
        Target::WindowMinus(0)
    } else if let Some(v) = int(other) {
        Target::Int(v)
    } else {
        match other {
            Expr::BinOp(b) if b.op == Operator::Sub && key(source, &b.left) == eq.modulus => {
                match int(&b.right) {
                    Some(v) => Target::WindowMinus(v),
                    None => return Some(None),
                }
            }
            _ => return Some(None),
        }
    };
    // Order tests become equalities over the values `x` can take where the
    // test runs (0 to `k - 1`, or 1 to `k` before the reset): `x >= k` is
    // `x == k`, `x > 0` is `x != 0`.
    let up_to_k = zone == Zone::BeforeReset;
    let (target, negated) = match (op, target) {
        (CmpOp::Eq, t) => (t, false),
        (CmpOp::NotEq, t) => (t, true),
        (CmpOp::GtE, Target::WindowMinus(0)) | (CmpOp::Gt, Target::WindowMinus(1)) if up_to_k => {
            (Target::WindowMinus(0), false)
        }
        (CmpOp::Lt, Target::WindowMinus(0)) | (CmpOp::LtE, Target::WindowMinus(1)) if up_to_k => {
            (Target::WindowMinus(0), true)
        }
        (CmpOp::Gt, Target::Int(0)) | (CmpOp::GtE, Target::Int(1)) => (Target::Int(0), true),
        (CmpOp::LtE, Target::Int(0)) | (CmpOp::Lt, Target::Int(1)) => (Target::Int(0), false),
        _ => return Some(None),
    };
    Some(equality_cond(name, &eq.modulus, zone, target, negated))
}

/// The condition "`x` equals `target`" on the iteration's place `p` in the
/// window, where `x` reads as the zone says; `None` for a test that never
/// holds there (`x == 0` before the reset, `x == k` outside it).
fn equality_cond(
    name: String,
    modulus: &str,
    zone: Zone,
    target: Target,
    negated: bool,
) -> Option<(Cond, bool)> {
    // The place `p` at which `x` equals the target, and whether it does
    // with a window of one (`p` is always 0: `x` reads 0, 1 before the
    // reset).
    let (residue, at_one) = match (zone, target) {
        (Zone::BeforeIncrement, Target::Int(c)) if c >= 0 => (Residue::of(c), c == 0),
        (Zone::BeforeIncrement, Target::WindowMinus(c)) if c >= 1 => (Residue::of(-c), c == 1),
        (Zone::BeforeReset, Target::Int(c)) if c >= 1 => (Residue::of(c - 1), c == 1),
        (Zone::BeforeReset, Target::WindowMinus(c)) if c >= 0 => {
            (Residue::of(c.checked_add(1)?.checked_neg()?), c == 0)
        }
        (Zone::AfterReset, Target::Int(0)) => (Residue::High(1), true),
        (Zone::AfterReset, Target::Int(c)) if c >= 1 => (Residue::of(c - 1), false),
        (Zone::AfterReset, Target::WindowMinus(c)) if c >= 1 => {
            (Residue::of(c.checked_add(1)?.checked_neg()?), c == 1)
        }
        _ => return None,
    };
    Some(counter_test(
        name,
        modulus.to_string(),
        residue,
        negated,
        at_one,
    ))
}

fn mentions_loss_or_norm(expr: &Expr) -> bool {
    let text = match expr {
        Expr::Call(c) => match c.func.as_ref() {
            Expr::Attribute(a) => dotted(&a.value),
            f => dotted(f),
        },
        e => dotted(e),
    };
    text.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.contains("loss") || t.contains("norm")
    })
}

fn is_bound(expr: &Expr) -> bool {
    if int(expr).is_some() || matches!(expr, Expr::NumberLiteral(_)) {
        return true;
    }
    // A multiple of a reference value (`10.0 * loss_0`, `ema *
    // spike_threshold`).
    if let Expr::BinOp(b) = expr {
        let reference = |e: &Expr| dotted(e).is_some() || is_bound(e);
        return b.op == Operator::Mult
            && ((is_bound(&b.left) && reference(&b.right))
                || (reference(&b.left) && is_bound(&b.right)));
    }
    dotted(expr).is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        ["max", "thres", "limit", "clip", "bound"]
            .iter()
            .any(|w| t.contains(w))
    })
}

/// `x is not None`: `x` when it is one.
pub(crate) fn none_guarded(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::Compare(c)
            if c.ops.len() == 1
                && c.ops[0] == CmpOp::IsNot
                && matches!(c.comparators.first(), Some(Expr::NoneLiteral(_))) =>
        {
            Some(&c.left)
        }
        _ => None,
    }
}

fn is_none_guard(expr: &Expr) -> bool {
    none_guarded(expr).is_some()
}

/// Whether `expr` tests a value for being non-finite or out of range:
/// `Some(true)` when it holds on the abnormal side (`isnan`), `Some(false)`
/// when on the normal side (`isfinite`).
/// Whether `expr` tests a value for being non-finite (or finite): a skip's
/// test (`torch.isfinite(norm)`, `found_overflow()`).
pub(crate) fn is_skip_test(expr: &Expr) -> bool {
    skip(expr).is_some()
}

fn skip(expr: &Expr) -> Option<bool> {
    match expr {
        Expr::UnaryOp(u) if u.op == UnaryOp::Not => skip(&u.operand).map(|b| !b),
        Expr::Call(c) => {
            let (last, receiver) = match c.func.as_ref() {
                Expr::Attribute(a) => (a.attr.id.as_str(), Some(a.value.as_ref())),
                Expr::Name(n) => (n.id.as_str(), None),
                _ => return None,
            };
            let lower = last.to_ascii_lowercase();
            match last {
                "isnan" | "isinf" | "isneginf" | "isposinf" => Some(true),
                "isfinite" => Some(false),
                // Helpers that check the loss or the gradients before a step:
                // `self.check_gradients(loss)`, `grads_are_finite()`,
                // `found_overflow()`.
                _ if lower.contains("overflow")
                    || lower.contains("nonfinite")
                    || lower.contains("has_nan")
                    || lower.contains("has_inf") =>
                {
                    Some(true)
                }
                _ if lower.contains("finite")
                    || lower.starts_with("check_grad")
                    || lower.contains("grads_ok")
                    || lower.contains("grad_ok") =>
                {
                    Some(false)
                }
                "any" | "all" | "item" | "bool" | "float" => {
                    let inner = receiver
                        .filter(|r| !matches!(r, Expr::Name(n) if n.id.as_str() == "torch"))
                        .or_else(|| c.arguments.args.first())?;
                    skip(inner)
                }
                _ => None,
            }
        }
        Expr::Compare(c) if c.ops.len() == 1 && c.comparators.len() == 1 => {
            let right = &c.comparators[0];
            let same = |a: &Expr, b: &Expr| dotted(a).is_some() && dotted(a) == dotted(b);
            match c.ops[0] {
                CmpOp::NotEq if same(&c.left, right) => Some(true),
                CmpOp::Gt | CmpOp::GtE if mentions_loss_or_norm(&c.left) && is_bound(right) => {
                    Some(true)
                }
                CmpOp::Lt | CmpOp::LtE if mentions_loss_or_norm(&c.left) && is_bound(right) => {
                    Some(false)
                }
                _ => None,
            }
        }
        // `p.grad is not None and torch.isnan(p.grad).any()`: the guard
        // only keeps the test from failing; the test is the other operand.
        Expr::BoolOp(b)
            if b.op == BoolOp::And
                && b.values.iter().filter(|v| !is_none_guard(v)).count() == 1 =>
        {
            skip(b.values.iter().find(|v| !is_none_guard(v))?)
        }
        Expr::BoolOp(b) => {
            let first = skip(b.values.first()?)?;
            let all_same = b.values.iter().all(|v| skip(v) == Some(first));
            // `isnan(a) or isinf(a)` holds on the abnormal side;
            // `isfinite(a) and a < max` on the normal one.
            let fits = matches!((b.op, first), (BoolOp::Or, true) | (BoolOp::And, false));
            (all_same && fits).then_some(first)
        }
        _ => None,
    }
}

fn literal(expr: &Expr) -> bool {
    match expr {
        Expr::StringLiteral(_)
        | Expr::NumberLiteral(_)
        | Expr::BooleanLiteral(_)
        | Expr::NoneLiteral(_) => true,
        Expr::Tuple(t) => t.elts.iter().all(literal),
        Expr::List(l) => l.elts.iter().all(literal),
        Expr::Set(s) => s.elts.iter().all(literal),
        Expr::UnaryOp(u) => literal(&u.operand),
        _ => false,
    }
}

/// Whether `expr` is a flag (names and attributes, compared for equality
/// or membership with literals), collecting the names it reads.
fn flag(expr: &Expr, reads: &mut Vec<String>) -> bool {
    match expr {
        Expr::Name(_) | Expr::Attribute(_) => match dotted(expr) {
            Some(d) => {
                reads.push(d);
                true
            }
            None => false,
        },
        Expr::UnaryOp(u) if u.op == UnaryOp::Not => flag(&u.operand, reads),
        Expr::BoolOp(b) => b.values.iter().all(|v| flag(v, reads)),
        // A setting in a dict (`cfg["amp"]`, `config.train["fp16"]`,
        // `cfg.get("amp", False)`): reads the dict.
        Expr::Subscript(s) if matches!(s.slice.as_ref(), Expr::StringLiteral(_)) => {
            flag(&s.value, reads)
        }
        Expr::Call(c)
            if matches!(c.func.as_ref(), Expr::Attribute(a) if a.attr.id.as_str() == "get")
                && matches!(c.arguments.args.first(), Some(Expr::StringLiteral(_)))
                && c.arguments.args.iter().all(literal)
                && c.arguments.keywords.is_empty() =>
        {
            let Expr::Attribute(a) = c.func.as_ref() else {
                return false;
            };
            flag(&a.value, reads)
        }
        // `isinstance(updater, torch.optim.Optimizer)`, `hasattr(self, "x")`.
        Expr::Call(c)
            if matches!(
                c.func.as_ref(),
                Expr::Name(n) if matches!(n.id.as_str(), "isinstance" | "hasattr" | "callable")
            ) && c.arguments.keywords.is_empty() =>
        {
            c.arguments
                .args
                .iter()
                .all(|a| literal(a) || flag(a, reads))
        }
        Expr::Compare(c) => {
            let equality = c.ops.iter().all(|op| {
                matches!(
                    op,
                    CmpOp::Eq | CmpOp::NotEq | CmpOp::In | CmpOp::NotIn | CmpOp::Is | CmpOp::IsNot
                )
            });
            equality
                && std::iter::once(c.left.as_ref())
                    .chain(c.comparators.iter())
                    .all(|e| literal(e) || flag(e, reads))
        }
        _ => false,
    }
}

/// Whether `test` only says that an optimizer exists (`hasattr(self,
/// "optimizer")`, `self.optimizer is not None`): it holds whenever that
/// optimizer is used.
pub fn optimizer_exists(test: &Expr, looks_like_optimizer: impl Fn(&str) -> bool) -> bool {
    match test {
        Expr::Call(c) if matches!(c.func.as_ref(), Expr::Name(n) if n.id.as_str() == "hasattr") => {
            matches!(c.arguments.args.get(1), Some(Expr::StringLiteral(s)) if looks_like_optimizer(s.value.to_str()))
        }
        Expr::Compare(c)
            if c.ops.len() == 1
                && c.ops[0] == CmpOp::IsNot
                && matches!(c.comparators.first(), Some(Expr::NoneLiteral(_))) =>
        {
            dotted(&c.left).is_some_and(|d| looks_like_optimizer(&d))
        }
        _ => false,
    }
}

/// Whether `call` is `enumerate(...)` or `range(...)`, and the value its
/// first target starts at (`None`: unknown start).
pub fn counting_iter(call: &ast::ExprCall) -> Option<Option<i64>> {
    let Expr::Name(n) = call.func.as_ref() else {
        return None;
    };
    let args = &call.arguments;
    match n.id.as_str() {
        "enumerate" => Some(match args.find_argument_value("start", 1) {
            Some(e) => int(e),
            None => Some(0),
        }),
        "range" => Some(if args.args.len() <= 1 {
            Some(0)
        } else {
            args.args.first().and_then(int)
        }),
        _ => None,
    }
}
