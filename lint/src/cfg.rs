//! The control-flow graph of one loop, calls of same-file functions inlined.
//!
//! Nodes are gradient events; the loop's head node closes every iteration.
//! Branches start with an assumption node that records which way each
//! classified condition went, so that path questions are correlated: a
//! loop-invariant flag takes the same branch every time, an accumulation
//! counter moves through its window one iteration at a time, and a skip on a
//! non-finite value can be left out of a question.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::ir::{
    map_nodes, CondClass, Counter, Event, Node, Param, Program, Reset, Residue, Span, Test, Tested,
    Updater,
};

const MAX_INLINE_DEPTH: usize = 4;

/// Flags correlated per graph (more are taken as unknown).
const MAX_FLAGS: u32 = 12;

/// Tests of other counters correlated within an iteration.
const MAX_ITERATION_BITS: u32 = 16;

/// The factors of a product's text (`(a*k)` -> `a`, `k`); the text itself
/// when it is not a product.
fn factors(text: &str) -> Vec<&str> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(text);
    if inner.contains('(') {
        return vec![text];
    }
    inner.split('*').collect()
}

/// `subject==literal` (a condition's key: its text without blanks), the
/// literal a string or a number: the subject and the literal's value
/// (`"train"` and `'train'` one value, `1` and `1.0` one value).
fn equals_literal(key: &str) -> Option<(&str, String)> {
    let (subject, value) = key.split_once("==")?;
    let literal = |t: &str| {
        let quoted = t.len() >= 2
            && (t.starts_with('"') && t.ends_with('"') || t.starts_with('\'') && t.ends_with('\''))
            && !t[1..t.len() - 1].contains(['"', '\'']);
        if quoted {
            return Some(format!("str {}", &t[1..t.len() - 1]));
        }
        let number = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.');
        number
            .then(|| t.parse::<f64>().ok())
            .flatten()
            .map(|n| format!("num {n}"))
    };
    let plain = |t: &str| !t.is_empty() && !t.contains(['=', '!', '<', '>', '(']);
    if plain(subject) {
        if let Some(v) = literal(value) {
            return Some((subject, v));
        }
    }
    if plain(value) {
        if let Some(v) = literal(subject) {
            return Some((value, v));
        }
    }
    None
}

/// What a path assumes: (condition, value) pairs.
type Assumptions = Vec<(usize, bool)>;

/// States one path question may visit; past it the answer is "no path"
/// (silence rather than a slow or wrong finding).
const MAX_STATES: usize = 50_000;

/// What a question says of a node ([`Cfg::marks`]): bits of a byte.
const BLOCKED: u8 = 1;
const BLOCKED_AFTER_NEED: u8 = 2;
const BLOCKED_BEFORE_NEED: u8 = 4;
const TO: u8 = 8;
const NEED: u8 = 16;

/// A path's progress once it passes a node marked `mark`: 0 before a
/// `need` node of the question, 1 after one (2, after it and a new
/// iteration, is set on the edge).
fn progress(mark: u8, got: u8) -> u8 {
    if got == 0 && mark & NEED != 0 {
        1
    } else {
        got
    }
}

/// Whether a path may pass a node with progress `got`, by the question's
/// `marks`.
fn admits(marks: &[u8], node: usize, got: u8) -> bool {
    let blocked = if got > 0 {
        BLOCKED_AFTER_NEED
    } else {
        BLOCKED_BEFORE_NEED
    };
    marks
        .get(node)
        .is_some_and(|m| m & (BLOCKED | blocked) == 0)
}

/// One loop's graph.
#[derive(Debug, Default)]
pub struct Cfg {
    /// The event of each node (`None`: the head or a nested loop's head).
    pub events: Vec<Option<(Event, Span)>>,
    /// Whether each node lies in `with accelerator.accumulate(...)`.
    pub in_accumulate: Vec<bool>,
    /// Successors of each node.
    pub succ: Vec<Vec<usize>>,
    /// The analysed loop's head: entering it starts an iteration.
    pub head: usize,
    /// Edges that close an iteration (to a loop head from its body).
    pub back_edges: Vec<(usize, usize)>,
    /// Per node, whether each of its successors' edges is a back edge
    /// (found once, read on every edge a path question takes).
    succ_back: Vec<Vec<bool>>,
    /// Nodes a `continue` in a branch follows (`if skipped: zero_grad();
    /// continue`): they end their iteration early.
    pub before_continue: Vec<usize>,
    /// Per node, the conditions a path through it assumes: (condition, value).
    pub assumes: Vec<Vec<(usize, bool)>>,
    /// Per node, the assumptions of the branches enclosing it.
    pub guards: Vec<Vec<(usize, bool)>>,
    /// Per node in a branch taken under one of several alternatives (`if
    /// k == 1 or i % k == 0:`), the assumptions of each: a question from
    /// the node starts in one of them, not in what they share.
    entries: Vec<Vec<Assumptions>>,
    /// Per node, the flags it sets (`skip = True`): (condition, value).
    pub sets: Vec<Vec<(usize, bool)>>,
    /// Per node, the heads of the loops (nested in the analysed one) that
    /// contain it.
    pub loops: Vec<Vec<usize>>,
    /// Per node, the counters of the loop it heads (loop heads only).
    pub heads: Vec<Option<Vec<Counter>>>,
    /// Per assumption node, the `if` it starts a branch of (an id shared
    /// by the branches of one `if`).
    pub branch_of: Vec<Option<usize>>,
    /// The conditions, by index.
    pub conds: Vec<Cond>,
    /// The counter and modulus the analysis tracks (the most tested one).
    tracked: Option<(String, String)>,
    /// The largest residue tested on the tracked counter, plus one.
    cap: u32,
    /// Where a window opens: one past the residue that guards a step.
    window_start: Option<Residue>,
    /// Whether the tracked window is the analysed loop's whole run (`i == 0`,
    /// `i == n - 1` over `range(n)`): no iteration follows its last one.
    pub whole_run: bool,
    /// Per nested loop head, the iteration bits of the tests inside it:
    /// cleared when that loop's iteration ends.
    inner_bits: Vec<u16>,
    /// The iteration bits of flags the file sets only to `True` or `False`
    /// (`should_start_update`): their value outlives the iteration.
    carried_bits: u16,
    /// Per flag bit, the flag bits that cannot hold with it: tests of one
    /// value against different literals (`task == "depth"`, `task ==
    /// "normal"`).
    exclusive: [u32; MAX_FLAGS as usize],
    /// Per loop head, which of its counters is the tracked one (or holds
    /// it: `state` of `state.step`); found once, read on every edge.
    owned: Vec<Option<usize>>,
    /// Whether some loop head's counters hold the tracked counter.
    owned_anywhere: bool,
    /// Per node, the call inlined that it lies in (a number per call; 0:
    /// the loop's own function).
    pub frames: Vec<usize>,
    /// Per node, the iteration bits and the flag bits a path may still read
    /// after the node (before another assignment, or the end of the
    /// iteration, sets them): the others are forgotten, so that paths that
    /// differ only in them meet.
    live: Vec<(u16, u32)>,
}

/// A condition of the graph, with what the analysis makes of it.
#[derive(Debug, Clone)]
pub struct Cond {
    /// The normalised expression.
    pub key: String,
    /// Its class; a flag the loop assigns is [`Kind::Unknown`].
    pub kind: Kind,
}

/// What a condition of the graph is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A test of the tracked counter, whether it holds when the window
    /// length is 1, and the bit that keeps its value within one iteration
    /// (the phase cannot say "not at this residue" while it is unknown).
    Counter(Residue, bool, Option<u32>),
    /// Holds on a non-finite or out-of-range value (with the bit that
    /// keeps its value within one iteration, where it is tested more than
    /// once: `if not ok: zero_grad()`, then `if ok: step()`).
    Skip(Option<u32>),
    /// A loop-invariant flag (the bit of the search state that holds it).
    Flag(Option<u32>),
    /// False at most until the analysed loop's first iteration ends.
    AfterFirst,
    /// True at most until the analysed loop's first iteration ends (`i ==
    /// 0` on the loop's own counter, from 0, where another window is
    /// tracked).
    FirstOnly,
    /// True only on the last iteration of the loop with this head (the
    /// analysed one or a nested one): `i == len(loader) - 1`, `i + 1 == n`
    /// over `range(n)`, where another window is tracked. No iteration of
    /// that run follows it.
    LastOnly(usize),
    /// The tracked counter's window length is 1: its boundary tests
    /// (`i % k == 0`, `(i + 1) % k == 0`) always hold, the others never.
    WindowOne,
    /// A test of another counter, or of the tracked one modulo something
    /// else: it holds the same way within one iteration (the bit of the
    /// state that holds it), and `implies_boundary` when it is a multiple of
    /// the window (`step % (r * k) == 0` puts `step % k == 0` too).
    Iteration {
        /// The bit.
        bit: u32,
        /// Whether, when it holds, the tracked counter is at a window's
        /// boundary.
        implies_boundary: bool,
    },
    /// Always holds (`p.grad is not None`).
    Always,
    /// No correlation is known.
    Unknown,
}

/// Where the tracked counter stands in its window of symbolic length `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    Unknown,
    Low(u32),
    High(u32),
    /// Between the tested residues.
    Middle,
}

impl State {
    /// The value of iteration bit `bit`, if decided in this iteration.
    fn bit(&self, bit: u32) -> Option<bool> {
        let mask = 1u16 << bit;
        (self.iteration_known & mask != 0).then_some(self.iteration_value & mask != 0)
    }

    /// Whether every path `other` may take, this state may take too: it
    /// decides no more than `other` and agrees where it decides. Deciding
    /// a condition, closing an iteration and entering a loop keep this
    /// order, so a path search need not go on from `other` where it has
    /// been with `self`.
    fn covers(&self, other: &State) -> bool {
        fn bits(known: u32, value: u32, other_known: u32, other_value: u32) -> bool {
            known & !other_known == 0 && (value ^ other_value) & known == 0
        }
        bits(self.known, self.value, other.known, other.value)
            && bits(
                self.iteration_known.into(),
                self.iteration_value.into(),
                other.iteration_known.into(),
                other.iteration_value.into(),
            )
            && (self.phase == Phase::Unknown || self.phase == other.phase)
            && (!self.later || other.later)
            && (self.last.is_none() || self.last == other.last)
            // A window of one decided takes every boundary test its own
            // way (`decide_counter`): only an undecided length covers one
            // decided longer.
            && (self.one == other.one || self.one.is_none() && other.one == Some(false))
    }

    /// The state with iteration bit `bit` decided (or assigned) to be `v`.
    fn with_bit(mut self, bit: u32, v: bool) -> State {
        let mask = 1u16 << bit;
        self.iteration_known |= mask;
        if v {
            self.iteration_value |= mask;
        } else {
            self.iteration_value &= !mask;
        }
        self
    }
}

/// The correlated part of a path: decided flags and the counter's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    known: u32,
    value: u32,
    phase: Phase,
    /// Whether an iteration of the analysed loop has ended on this path.
    later: bool,
    /// The loop (its head) in whose run's last iteration this path is
    /// ([`Kind::LastOnly`]).
    last: Option<usize>,
    /// Whether the window length is 1, when decided.
    one: Option<bool>,
    /// Tests decided in this iteration of the analysed loop
    /// ([`Kind::Iteration`] bits), and their values.
    iteration_known: u16,
    iteration_value: u16,
}

/// A path question.
#[derive(Debug, Clone, Copy)]
pub struct Query<'q> {
    /// Where the path starts (its successors are the first nodes).
    pub from: usize,
    /// Where it may end.
    pub to: &'q [usize],
    /// Nodes it must not pass.
    pub blocked: &'q [usize],
    /// Nodes it must pass (one of them) before ending.
    pub need: Option<&'q [usize]>,
    /// Nodes it must not pass once it has passed a `need` node.
    pub blocked_after_need: &'q [usize],
    /// Nodes it must not pass before it has passed a `need` node.
    pub blocked_before_need: &'q [usize],
    /// Whether, after a `need` node, the path must also close the analysed
    /// loop's iteration before it ends.
    pub need_then_next_iteration: bool,
    /// Whether the path must reach a `need` node within the iteration it
    /// starts in (no back edge before it).
    pub need_in_first_iteration: bool,
    /// Whether the path may close iterations (back edges).
    pub back: bool,
    /// Whether paths through the abnormal side of a skip are left out.
    pub avoid_skips: bool,
    /// A nested loop (its head) the path must stay in.
    pub within: Option<usize>,
    /// Whether the tracked counter's window length is 1 (every boundary test
    /// holds, every other test fails) rather than unknown.
    pub window_of_one: bool,
    /// The head of the loop whose counter picks the updater (`opts[i]` in
    /// `for i in range(n)`): another iteration of it is another updater,
    /// so the path does not close that loop's iterations.
    pub picked_by: Option<usize>,
}

impl<'q> Query<'q> {
    /// A question from `from` to `to`, across iterations, nothing else asked.
    pub fn new(from: usize, to: &'q [usize]) -> Self {
        Query {
            from,
            to,
            blocked: &[],
            need: None,
            blocked_after_need: &[],
            blocked_before_need: &[],
            need_then_next_iteration: false,
            need_in_first_iteration: false,
            back: true,
            avoid_skips: false,
            within: None,
            window_of_one: false,
            picked_by: None,
        }
    }
}

struct Ctx {
    head: Option<usize>,
    breaks: Vec<usize>,
    returns: Option<Vec<usize>>,
    accumulate: bool,
}

/// The names a loop assigns, looked up by name and by dotted prefix.
struct Assigned {
    names: FxHashSet<String>,
    /// The dotted prefixes of the names (`self.net` of `self.net.w`).
    objects: FxHashSet<String>,
}

impl Assigned {
    fn new(names: &[String]) -> Self {
        let objects = names
            .iter()
            .flat_map(|n| n.match_indices('.').map(move |(at, _)| n[..at].to_string()))
            .collect();
        Assigned {
            names: names.iter().cloned().collect(),
            objects,
        }
    }

    /// Whether the loop assigns `name`, an object it is an attribute of,
    /// or an attribute of it.
    fn touches(&self, name: &str) -> bool {
        self.names.contains(name)
            || self.objects.contains(name)
            || name
                .match_indices('.')
                .any(|(at, _)| self.names.contains(&name[..at]))
    }
}

struct Builder<'p> {
    program: &'p Program,
    cfg: Cfg,
    calls: Vec<String>,
    /// Raw conditions, by key (same key, same index).
    raw: Vec<crate::ir::Cond>,
    /// Where each key of `raw` is.
    raw_index: FxHashMap<String, usize>,
    /// How many branches test each raw condition.
    tested: Vec<usize>,
    /// Assumptions of the enclosing branches.
    guard_stack: Vec<(usize, bool)>,
    /// Names assigned by the loop and the functions it calls.
    assigned: FxHashSet<String>,
    /// The objects whose attributes `assigned` has (`opt` and `opt.state`
    /// of `opt.state.step`), found once the graph is built.
    assigned_objects: FxHashSet<String>,
    /// Heads of the nested loops being built.
    loop_stack: Vec<usize>,
    /// Conditions a node sets (`skip = True`).
    set_conds: FxHashSet<usize>,
    /// What the last `if` without `else` assumes when none of its branches
    /// ran.
    fallthrough: Vec<(usize, bool)>,
    /// The names each nested loop being built assigns.
    nested_assigned: Vec<Assigned>,
    /// Per condition, whether every test of it sits in a nested loop that
    /// does not assign what it reads (a value fixed before that loop runs).
    fixed_in_nested: Vec<bool>,
    /// Iteration bits that nested loops' iterations leave as they are.
    outer_bits: u16,
    /// The alternatives of the innermost branch with several.
    entry_stack: Vec<Vec<Assumptions>>,
    /// What the next call hands its callee's parameters.
    arguments: Vec<(Param, Tested)>,
    /// The optimizers the next call hands its callee, by the caller's names.
    handed: Vec<(Param, String)>,
    /// The first node of each branch the node being built lies in (within
    /// the innermost loop being built).
    branch_starts: Vec<usize>,
    /// Per function being inlined, its parameters' tests as its call
    /// handed them.
    substitutions: Vec<Vec<(String, Tested)>>,
    /// The calls being inlined, by number (see [`Cfg::frames`]).
    frame_stack: Vec<usize>,
    /// Calls inlined so far.
    frames_made: usize,
}

impl Cfg {
    /// Builds the graph of a loop whose body is `body`, which assigns
    /// `assigned` and advances `counters`.
    pub fn of_loop(
        program: &Program,
        body: &[Node],
        assigned: &[String],
        counters: &[Counter],
    ) -> Cfg {
        let mut b = Builder {
            program,
            cfg: Cfg::default(),
            calls: Vec::new(),
            raw: Vec::new(),
            raw_index: FxHashMap::default(),
            tested: Vec::new(),
            guard_stack: Vec::new(),
            assigned: assigned.iter().cloned().collect(),
            assigned_objects: FxHashSet::default(),
            loop_stack: Vec::new(),
            set_conds: FxHashSet::default(),
            fallthrough: Vec::new(),
            nested_assigned: Vec::new(),
            fixed_in_nested: Vec::new(),
            outer_bits: 0,
            entry_stack: Vec::new(),
            arguments: Vec::new(),
            handed: Vec::new(),
            branch_starts: Vec::new(),
            substitutions: Vec::new(),
            frame_stack: Vec::new(),
            frames_made: 0,
        };
        let head = b.node(None, false);
        b.cfg.heads[head] = Some(counters.to_vec());
        b.cfg.head = head;
        let mut ctx = Ctx {
            head: Some(head),
            breaks: Vec::new(),
            returns: None,
            accumulate: false,
        };
        let out = b.seq(body, vec![head], &mut ctx);
        b.back_edges(&out, head);
        b.finish();
        b.cfg
    }

    /// The innermost loop around `node` (one nested in the analysed loop,
    /// or that loop) whose counter `name` picks the models it calls
    /// ([`Counter::picks_models`]).
    pub fn loop_picking(&self, name: &str, node: usize) -> Option<usize> {
        let picks = |head: &usize| {
            self.heads.get(*head).is_some_and(|counters| {
                counters
                    .as_ref()
                    .is_some_and(|cs| cs.iter().any(|c| c.name == name && c.picks_models))
            })
        };
        let around = self.loops.get(node)?;
        around
            .iter()
            .rev()
            .chain([&self.head])
            .find(|h| picks(h))
            .copied()
    }

    /// The assumptions of every alternative `node` may be entered under.
    pub fn entries_of(&self, node: usize) -> impl Iterator<Item = &(usize, bool)> {
        self.entries[node].iter().flatten()
    }

    /// The tracked counter's window length, when it is a name or attribute
    /// (a setting that may be 1), not a number.
    pub fn window_setting(&self) -> Option<&str> {
        let (_, modulus) = self.tracked.as_ref()?;
        let setting = modulus
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_');
        setting.then_some(modulus.as_str())
    }

    /// Nodes whose event satisfies `pred`.
    pub fn find(&self, pred: impl Fn(&Event) -> bool) -> Vec<usize> {
        (0..self.events.len())
            .filter(|&n| self.events[n].as_ref().is_some_and(|(e, _)| pred(e)))
            .collect()
    }

    /// The span of a node's event.
    pub fn span(&self, n: usize) -> Span {
        self.events[n].as_ref().map(|(_, s)| *s).unwrap_or_default()
    }

    /// Whether a path leads from a successor of `from` to a node in `to`,
    /// through no node in `blocked`; with `need` set, the path must also pass
    /// a node in `need` (checked on the way, `to` nodes included).
    pub fn path(
        &self,
        from: usize,
        to: &[usize],
        blocked: &[usize],
        need: Option<&[usize]>,
    ) -> bool {
        self.ask(Query {
            blocked,
            need,
            ..Query::new(from, to)
        })
    }

    /// Like [`Cfg::path`], within one iteration of every loop: no back edge.
    pub fn forward_path(&self, from: usize, to: &[usize], blocked: &[usize]) -> bool {
        self.ask(Query {
            blocked,
            back: false,
            ..Query::new(from, to)
        })
    }

    /// Whether every nested loop around `inner` also runs around `outer`
    /// (`outer` is in the same loop as `inner`, or deeper).
    pub fn within_loops_of(&self, outer: usize, inner: usize) -> bool {
        self.loops[inner]
            .iter()
            .all(|l| self.loops[outer].contains(l))
    }

    /// The innermost nested loop (its head) containing both nodes.
    pub fn common_loop(&self, a: usize, b: usize) -> Option<usize> {
        self.loops[a]
            .iter()
            .rev()
            .find(|l| self.loops[b].contains(l))
            .copied()
    }

    /// The nodes outside the innermost nested loop around `node` (none when
    /// `node` is directly in the analysed loop).
    pub fn outside_loop_of(&self, node: usize) -> Vec<usize> {
        match self.loops[node].last() {
            Some(&l) => (0..self.events.len())
                .filter(|&n| n != l && !self.loops[n].contains(&l))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Nodes on the abnormal side of a skip (`if torch.isnan(loss): ...`)
    /// that leave a step out: from the normal side a step of `steps` runs
    /// in the same iteration, from this side none does.
    pub fn skip_nodes(&self, steps: &[usize]) -> Vec<usize> {
        let n = self.events.len();
        (0..n)
            .filter(|&k| {
                self.assumes[k]
                    .iter()
                    .any(|&(c, v)| v && matches!(self.conds[c].kind, Kind::Skip(_)))
            })
            .filter(|&k| {
                let normal_steps = (0..n).any(|o| {
                    o != k
                        && self.branch_of[o].is_some()
                        && self.branch_of[o] == self.branch_of[k]
                        && (steps.contains(&o) || self.forward_path(o, steps, &[]))
                });
                normal_steps && !self.forward_path(k, steps, &[])
            })
            .collect()
    }

    /// Answers a path question. Paths are correlated: within the state the
    /// start node's enclosing branches give, every classified condition is
    /// taken consistently (flags the same way every time, the counter one
    /// window position per iteration).
    pub fn ask(&self, q: Query) -> bool {
        let Some(seed) = self.seed(q.from, q.window_of_one.then_some(true)) else {
            return false;
        };
        // Under `if a or b:`, the node was reached through `a` or through `b`.
        let starts: Vec<State> = match self.entries[q.from].as_slice() {
            [] => vec![seed],
            alternatives => alternatives
                .iter()
                .filter_map(|alternative| {
                    alternative
                        .iter()
                        .try_fold(seed, |s, &(c, v)| self.decide(s, c, v, false))
                })
                .collect(),
        };
        // Progress: 0 before a `need` node, 1 after it, 2 after it and a
        // new iteration (when asked for).
        let done = if q.need_then_next_iteration { 2 } else { 1 };
        // Conditions taken consistently only remove paths: with no path
        // at all, the states (many, where a loop tests many flags) need no
        // search.
        let marks = self.marks(&q);
        if !self.may_reach(&q, &marks, done) {
            return false;
        }
        // The states each node was reached with; a state no weaker than
        // one of them reaches nothing new (`State::covers`).
        let mut seen: Vec<[Vec<State>; 3]> = vec![Default::default(); self.events.len()];
        let mut states = 0usize;
        let mut stack: Vec<(usize, u8, State)> = Vec::new();
        for start in starts {
            self.push_successors(q.from, 0, start, &q, &mut stack);
        }
        while let Some((node, got, state)) = stack.pop() {
            if !admits(&marks, node, got) {
                continue;
            }
            let Some(mut state) = self.assume(node, state, q.avoid_skips) else {
                continue;
            };
            let (bits, flags) = self.live[node];
            state.iteration_known &= bits;
            state.iteration_value &= bits;
            state.known &= flags;
            state.value &= flags;
            let got = progress(marks[node], got);
            let here = &mut seen[node][got as usize];
            if here.iter().any(|s| s.covers(&state)) {
                continue;
            }
            here.retain(|s| !state.covers(s));
            here.push(state);
            states += 1;
            if states > MAX_STATES {
                return false;
            }
            if marks[node] & TO != 0 && (q.need.is_none() || got >= done) {
                return true;
            }
            self.push_successors(node, got, state, &q, &mut stack);
        }
        false
    }

    /// Whether a path of the question exists with every condition free:
    /// [`Cfg::ask`]'s paths, and more.
    fn may_reach(&self, q: &Query, marks: &[u8], done: u8) -> bool {
        let mut seen = vec![[false; 3]; self.events.len()];
        let mut stack: Vec<(usize, u8)> = self
            .successors(q, q.from, 0)
            .map(|(s, _, g)| (s, g))
            .collect();
        while let Some((node, got)) = stack.pop() {
            if !admits(marks, node, got) {
                continue;
            }
            let got = progress(marks[node], got);
            if std::mem::replace(&mut seen[node][got as usize], true) {
                continue;
            }
            if marks[node] & TO != 0 && (q.need.is_none() || got >= done) {
                return true;
            }
            stack.extend(self.successors(q, node, got).map(|(s, _, g)| (s, g)));
        }
        false
    }

    /// Per node, what `q` says of it: [`BLOCKED`] (or outside the loop
    /// the question must stay in), [`BLOCKED_AFTER_NEED`],
    /// [`BLOCKED_BEFORE_NEED`], [`TO`], [`NEED`]; found once per question,
    /// read on every node a path passes.
    fn marks(&self, q: &Query) -> Vec<u8> {
        let n = self.events.len();
        let mut marks = vec![0u8; n];
        let mut mark = |nodes: &[usize], bit: u8| {
            for &x in nodes.iter().filter(|&&x| x < n) {
                marks[x] |= bit;
            }
        };
        mark(q.blocked, BLOCKED);
        mark(q.blocked_after_need, BLOCKED_AFTER_NEED);
        mark(q.blocked_before_need, BLOCKED_BEFORE_NEED);
        mark(q.to, TO);
        mark(q.need.unwrap_or(&[]), NEED);
        if let Some(within) = q.within {
            for (node, m) in marks.iter_mut().enumerate() {
                if node != within && !self.loops[node].contains(&within) {
                    *m |= BLOCKED;
                }
            }
        }
        marks
    }

    /// The edges a path of `q` may take from `node` with progress `got`:
    /// each successor, whether the edge is a back edge, and the progress
    /// after it.
    fn successors<'a>(
        &'a self,
        q: &'a Query,
        node: usize,
        got: u8,
    ) -> impl Iterator<Item = (usize, bool, u8)> + 'a {
        self.succ[node]
            .iter()
            .zip(&self.succ_back[node])
            .filter_map(move |(&s, &is_back)| {
                let closes_iteration = is_back && s == self.head;
                if (is_back && (!q.back || q.picked_by == Some(s)))
                    || (closes_iteration && got == 0 && q.need_in_first_iteration)
                {
                    return None;
                }
                let got = if got == 1 && q.need_then_next_iteration && closes_iteration {
                    2
                } else {
                    got
                };
                Some((s, is_back, got))
            })
    }

    fn push_successors(
        &self,
        node: usize,
        got: u8,
        state: State,
        q: &Query,
        stack: &mut Vec<(usize, u8, State)>,
    ) {
        for (s, is_back, got) in self.successors(q, node, got) {
            for next in self.transit(s, is_back, state).iter() {
                stack.push((s, got, next));
            }
        }
    }

    /// The state at `node` from its enclosing branches.
    fn seed(&self, node: usize, one: Option<bool>) -> Option<State> {
        let mut state = State {
            known: 0,
            value: 0,
            phase: Phase::Unknown,
            later: false,
            last: None,
            one,
            iteration_known: 0,
            iteration_value: 0,
        };
        for &(c, v) in &self.guards[node] {
            state = self.decide(state, c, v, false)?;
        }
        Some(state)
    }

    /// Applies a node's assumptions; `None` when they contradict the state.
    fn assume(&self, node: usize, state: State, avoid_skips: bool) -> Option<State> {
        let mut state = state;
        for &(c, v) in &self.assumes[node] {
            state = self.decide(state, c, v, avoid_skips)?;
        }
        for &(c, v) in &self.sets[node] {
            if let Kind::Iteration { bit, .. } = self.conds[c].kind {
                state = state.with_bit(bit, v);
            }
        }
        Some(state)
    }

    fn decide(&self, mut state: State, c: usize, v: bool, avoid_skips: bool) -> Option<State> {
        match &self.conds[c].kind {
            Kind::Skip(bit) => {
                if avoid_skips && v {
                    return None;
                }
                match bit.map(|b| (b, state.bit(b))) {
                    Some((_, Some(known))) => (known == v).then_some(state),
                    Some((b, None)) => Some(state.with_bit(b, v)),
                    None => Some(state),
                }
            }
            Kind::Flag(Some(bit)) => {
                let mask = 1u32 << bit;
                if state.known & mask != 0 {
                    ((state.value & mask != 0) == v).then_some(state)
                } else {
                    state.known |= mask;
                    if v {
                        // The tests it excludes are false from here on.
                        let excluded = self.exclusive[*bit as usize];
                        if state.known & state.value & excluded != 0 {
                            return None;
                        }
                        state.known |= excluded;
                        state.value |= mask;
                    }
                    Some(state)
                }
            }
            Kind::WindowOne => match state.one {
                Some(one) => (one == v).then_some(state),
                None => {
                    state.one = Some(v);
                    Some(state)
                }
            },
            &Kind::Counter(r, at_one, bit) => {
                if let Some(bit) = bit {
                    match state.bit(bit) {
                        Some(known) if known != v => return None,
                        Some(_) => {}
                        None => state = state.with_bit(bit, v),
                    }
                }
                self.decide_counter(state, r, at_one, v)
            }
            Kind::AfterFirst => (v || !state.later).then_some(state),
            Kind::FirstOnly => (!v || !state.later).then_some(state),
            &Kind::LastOnly(head) => match (v, state.last) {
                (true, None) => {
                    state.last = Some(head);
                    Some(state)
                }
                (true, Some(h)) => (h == head).then_some(state),
                (false, last) => (last != Some(head)).then_some(state),
            },
            &Kind::Iteration {
                bit,
                implies_boundary,
            } => {
                if let Some(known) = state.bit(bit) {
                    return (known == v).then_some(state);
                }
                state = state.with_bit(bit, v);
                if v && implies_boundary {
                    return self.decide_counter(state, Residue::Low(0), true, true);
                }
                Some(state)
            }
            Kind::Always => v.then_some(state),
            Kind::Flag(None) | Kind::Unknown => Some(state),
        }
    }

    /// Decides a test of the tracked counter (`counter % k` at `r`, which
    /// holds with a window of one when `at_one`) to be `v`.
    fn decide_counter(&self, mut state: State, r: Residue, at_one: bool, v: bool) -> Option<State> {
        match state.one {
            Some(true) => return (v == at_one).then_some(state),
            None if v != at_one => state.one = Some(false),
            _ => {}
        }
        let at = match r {
            Residue::Low(n) => Phase::Low(n),
            Residue::High(n) => Phase::High(n),
        };
        // Over a window as long as the run, `i == 0` is its first iteration.
        if self.whole_run && v && at == Phase::Low(0) && state.later {
            return None;
        }
        match state.phase {
            Phase::Unknown => {
                if v {
                    state.phase = at;
                }
                Some(state)
            }
            p => ((p == at) == v).then_some(state),
        }
    }

    /// The states on entering `head` (a loop head or not) from an edge.
    fn transit(&self, node: usize, is_back: bool, mut state: State) -> Next {
        // After its run's last iteration a loop ends; run again, it is a
        // new run.
        if state.last == Some(node) {
            if is_back {
                return Next::none();
            }
            state.last = None;
        }
        if is_back && node == self.head {
            if self.whole_run && matches!(state.phase, Phase::High(0 | 1)) {
                // The run's last iteration: the loop ends.
                return Next::none();
            }
            state.later = true;
            state.iteration_known &= self.carried_bits;
            state.iteration_value &= self.carried_bits;
        } else if is_back {
            // A nested loop's iteration ends: its tests are asked again.
            let inner = self.inner_bits.get(node).copied().unwrap_or(0);
            let mask = !(inner & !self.carried_bits);
            state.iteration_known &= mask;
            state.iteration_value &= mask;
        }
        let Some(counters) = self.heads[node].as_ref() else {
            return Next::one(state);
        };
        let Some((tracked, _)) = &self.tracked else {
            return Next::one(state);
        };
        let own = self.owned[node].map(|i| &counters[i]);
        let with = |phase| State { phase, ..state };
        if !is_back {
            // Entering a loop that restarts the counter.
            // A loop that binds the counter with no known start (a step
            // object's `number`) starts where a window opens.
            return match own.map(|c| c.start) {
                // A counter that carries over resumes where the last run
                // of the loop left it: at the next place of the window.
                _ if own.is_some_and(|c| c.persists) => self.advance(state),
                Some(Some(v)) => Next::one(with(phase_of(Residue::of(v)))),
                Some(None) => match self.window_start {
                    Some(r) if own.is_some_and(|c| &c.name != tracked) => {
                        Next::one(with(phase_of(r)))
                    }
                    _ => Next::one(with(Phase::Unknown)),
                },
                None => Next::one(state),
            };
        }
        let advances = own.is_some() || (node == self.head && !self.owned_anywhere);
        if !advances {
            return Next::one(state);
        }
        self.advance(state)
    }

    /// The bits each node's assumptions read: iteration bits, and flag
    /// bits (with those a flag excludes).
    fn read_bits(&self, node: usize) -> (u16, u32) {
        let mut read = (0u16, 0u32);
        for &(c, _) in &self.assumes[node] {
            match self.conds[c].kind {
                Kind::Skip(Some(bit))
                | Kind::Counter(_, _, Some(bit))
                | Kind::Iteration { bit, .. } => read.0 |= 1 << bit,
                Kind::Flag(Some(bit)) => read.1 |= (1 << bit) | self.exclusive[bit as usize],
                _ => {}
            }
        }
        read
    }

    /// [`Cfg::live`]: the bits live out of each node, to a fixed point.
    /// A back edge to the analysed loop's head forgets the iteration bits
    /// not carried over; one to a nested loop's head, that loop's.
    fn live_bits(&self) -> Vec<(u16, u32)> {
        let n = self.events.len();
        let read: Vec<(u16, u32)> = (0..n).map(|i| self.read_bits(i)).collect();
        let set: Vec<u16> = (0..n)
            .map(|i| {
                self.sets[i]
                    .iter()
                    .filter_map(|&(c, _)| match self.conds[c].kind {
                        Kind::Iteration { bit, .. } => Some(1u16 << bit),
                        _ => None,
                    })
                    .fold(0, |a, b| a | b)
            })
            .collect();
        let mut live_in = read.clone();
        let mut live_out = vec![(0u16, 0u32); n];
        let mut changed = true;
        while changed {
            changed = false;
            for i in (0..n).rev() {
                let mut out = (0u16, 0u32);
                for (&s, &is_back) in self.succ[i].iter().zip(&self.succ_back[i]) {
                    let (bits, flags) = live_in[s];
                    let kept = if is_back && s == self.head {
                        self.carried_bits
                    } else if is_back {
                        !(self.inner_bits.get(s).copied().unwrap_or(0) & !self.carried_bits)
                    } else {
                        u16::MAX
                    };
                    out.0 |= bits & kept;
                    out.1 |= flags;
                }
                let inn = (read[i].0 | (out.0 & !set[i]), read[i].1 | out.1);
                if out != live_out[i] || inn != live_in[i] {
                    live_out[i] = out;
                    live_in[i] = inn;
                    changed = true;
                }
            }
        }
        live_out
    }

    /// The tracked counter's next place in its window.
    fn advance(&self, state: State) -> Next {
        let with = |phase| State { phase, ..state };
        match state.phase {
            Phase::Unknown => Next::one(state),
            Phase::Low(n) if n < self.cap => Next::one(with(Phase::Low(n + 1))),
            Phase::Low(_) => Next::one(with(Phase::Middle)),
            Phase::Middle => Next {
                states: [with(Phase::Middle), with(Phase::High(self.cap))],
                len: 2,
            },
            Phase::High(1) | Phase::High(0) => Next::one(with(Phase::Low(0))),
            Phase::High(n) => Next::one(with(Phase::High(n - 1))),
        }
    }
}

/// The states an edge leads to: none, one or two (kept inline: asked on
/// every edge of every path question).
#[derive(Clone, Copy)]
struct Next {
    states: [State; 2],
    len: usize,
}

impl Next {
    const EMPTY: State = State {
        known: 0,
        value: 0,
        phase: Phase::Unknown,
        later: false,
        last: None,
        one: None,
        iteration_known: 0,
        iteration_value: 0,
    };

    fn none() -> Self {
        Next {
            states: [Self::EMPTY; 2],
            len: 0,
        }
    }

    fn one(state: State) -> Self {
        Next {
            states: [state, Self::EMPTY],
            len: 1,
        }
    }

    fn iter(&self) -> impl Iterator<Item = State> + '_ {
        self.states[..self.len].iter().copied()
    }
}

fn phase_of(r: Residue) -> Phase {
    match r {
        Residue::Low(n) => Phase::Low(n),
        Residue::High(0) => Phase::Low(0),
        Residue::High(n) => Phase::High(n),
    }
}

impl Builder<'_> {
    fn node(&mut self, event: Option<(Event, Span)>, accumulate: bool) -> usize {
        self.cfg.events.push(event);
        self.cfg.in_accumulate.push(accumulate);
        self.cfg.succ.push(Vec::new());
        self.cfg.assumes.push(Vec::new());
        self.cfg.sets.push(Vec::new());
        self.cfg.guards.push(self.guard_stack.clone());
        self.cfg
            .entries
            .push(self.entry_stack.last().cloned().unwrap_or_default());
        self.cfg.heads.push(None);
        self.cfg.loops.push(self.loop_stack.clone());
        self.cfg.branch_of.push(None);
        self.cfg
            .frames
            .push(self.frame_stack.last().copied().unwrap_or(0));
        self.cfg.events.len() - 1
    }

    /// The index of a condition (same key, same index).
    fn cond(&mut self, test: &Test) -> (usize, bool) {
        let fixed_here = self.fixed_in_nested_loops(&test.cond.class);
        let i = match self.raw_index.get(&test.cond.key).copied() {
            // A function nested in the one that binds the name reads it as
            // a flag of its own (`need_update` in a closure).
            Some(i) if test.cond.class == CondClass::Bound => {
                self.raw[i].class = CondClass::Bound;
                i
            }
            Some(i) => i,
            None => {
                self.raw_index.insert(test.cond.key.clone(), self.raw.len());
                self.raw.push(test.cond.clone());
                self.tested.push(0);
                self.fixed_in_nested.push(true);
                self.raw.len() - 1
            }
        };
        self.fixed_in_nested[i] &= fixed_here;
        self.tested[i] += 1;
        (i, !test.negated)
    }

    /// Whether a test of this class, here, reads only names the nested loops
    /// around it leave alone (`if train_step is not None:` in a batch loop,
    /// `train_step` chosen before it, in an epoch the analysed loop runs).
    fn fixed_in_nested_loops(&self, class: &CondClass) -> bool {
        let reads: &[String] = match class {
            CondClass::Flag(reads) => reads,
            CondClass::NotNone(name) => std::slice::from_ref(name),
            _ => return false,
        };
        let assigns = |r: &String| self.nested_assigned.iter().any(|a| a.touches(r));
        !self.nested_assigned.is_empty() && !reads.iter().any(assigns)
    }

    /// The start of a branch taken under one of `alternatives`: an
    /// assumption node per alternative after `frontier`; and the
    /// assumptions all of them share (the branch's guard).
    fn alternatives(
        &mut self,
        alternatives: &[Vec<Test>],
        frontier: &[usize],
        accumulate: bool,
        group: usize,
    ) -> (Vec<usize>, Assumptions, Vec<Assumptions>) {
        let mut starts = Vec::new();
        let mut common: Option<Vec<(usize, bool)>> = None;
        let mut each = Vec::new();
        for alternative in alternatives {
            let assumes: Vec<(usize, bool)> = alternative.iter().map(|t| self.cond(t)).collect();
            each.push(assumes.clone());
            common = Some(match common {
                None => assumes.clone(),
                Some(c) => c.into_iter().filter(|a| assumes.contains(a)).collect(),
            });
            starts.extend(self.assumption(assumes, frontier.to_vec(), accumulate, group));
        }
        starts.sort_unstable();
        starts.dedup();
        (starts, common.unwrap_or_default(), each)
    }

    /// An assumption node after `frontier`, when there is anything to
    /// assume, starting a branch of the `if` numbered `group`.
    fn assumption(
        &mut self,
        assumes: Vec<(usize, bool)>,
        frontier: Vec<usize>,
        accumulate: bool,
        group: usize,
    ) -> Vec<usize> {
        if assumes.is_empty() {
            return frontier;
        }
        let n = self.node(None, accumulate);
        self.cfg.assumes[n] = assumes;
        self.cfg.branch_of[n] = Some(group);
        self.edges(&frontier, n);
        vec![n]
    }

    /// Classifies the conditions once the whole graph is known.
    fn finish(&mut self) {
        self.assigned_objects = self
            .assigned
            .iter()
            .flat_map(|a| a.match_indices('.').map(|(at, _)| a[..at].to_string()))
            .collect();
        let guards_events = self.conditions_guarding_events();
        let tracked = self.tracked_window(&guards_events);
        let correlated = self.correlated_flags(&guards_events);
        self.cfg.cap = self.classify_conditions(&guards_events, tracked.as_ref(), &correlated);
        self.cfg.inner_bits = self.inner_loop_bits();
        self.cfg.carried_bits = self.carried_bits();
        self.cfg.window_start = self.window_start();
        self.fresh_optimizers_of_new_models();
        self.cfg.tracked = tracked;
        self.cfg.owned = self.owned_counters();
        let cfg = &self.cfg;
        self.cfg.succ_back = (0..cfg.succ.len())
            .map(|n| {
                cfg.succ[n]
                    .iter()
                    .map(|&s| cfg.back_edges.contains(&(n, s)))
                    .collect()
            })
            .collect();
        self.cfg.owned_anywhere = self.cfg.owned.iter().any(Option::is_some);
        self.cfg.live = self.cfg.live_bits();
    }

    /// Per loop head, the index of its counter that is (or holds) the
    /// tracked one.
    fn owned_counters(&self) -> Vec<Option<usize>> {
        let Some((tracked, _)) = &self.cfg.tracked else {
            return vec![None; self.cfg.heads.len()];
        };
        let owns = |c: &Counter| {
            &c.name == tracked
                || tracked
                    .strip_prefix(c.name.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        self.cfg
            .heads
            .iter()
            .map(|cs| cs.as_ref()?.iter().position(owns))
            .collect()
    }

    /// Which conditions guard gradient events.
    fn conditions_guarding_events(&self) -> Vec<bool> {
        let mut guards_events = vec![false; self.raw.len()];
        for (n, event) in self.cfg.events.iter().enumerate() {
            if event.is_some() {
                // Under `if a or b:` each of `a`, `b` guards it too.
                for &(c, _) in self.cfg.guards[n].iter().chain(self.cfg.entries_of(n)) {
                    guards_events[c] = true;
                }
            }
        }
        guards_events
    }

    /// The counter window (counter, modulus) that is tracked: the one that
    /// guards gradient events and is tested most often (the first on a tie);
    /// a `%` window before a loop's whole run (`i == 0`, `i == n - 1`). Sets
    /// whether it is as long as the loop's run.
    fn tracked_window(&mut self, guards_events: &[bool]) -> Option<(String, String)> {
        // (counter, modulus) -> (not a whole run, guards events, tests).
        type Weight = (bool, bool, usize);
        let mut counts: Vec<((String, String), Weight)> = Vec::new();
        for (i, c) in self.raw.iter().enumerate() {
            if let CondClass::Counter {
                counter,
                modulus,
                whole_run,
                ..
            } = &c.class
            {
                let k = (counter.clone(), modulus.clone());
                let tested = self.tested[i];
                match counts.iter_mut().find(|(x, _)| *x == k) {
                    Some((_, (_, g, n))) => {
                        *g |= guards_events[i];
                        *n += tested;
                    }
                    None => counts.push((k, (!whole_run, guards_events[i], tested))),
                }
            }
        }
        let mut tracked = counts
            .iter()
            .rev()
            .max_by_key(|(_, weight)| *weight)
            .map(|(k, _)| k.clone());
        // A window whose length is a multiple of another's on the same
        // counter (`step % (r * k)` and `step % k`): the shorter one is
        // tracked, the longer one implies its boundary.
        if let Some((counter, modulus)) = tracked.clone() {
            let shorter = counts.iter().find(|((c, m), _)| {
                *c == counter && *m != modulus && factors(&modulus).contains(&m.as_str())
            });
            if let Some((k, _)) = shorter {
                tracked = Some(k.clone());
            }
        }
        // A window as long as the loop's run: its last iteration ends the run.
        self.cfg.whole_run = tracked
            .as_ref()
            .and_then(|t| counts.iter().find(|(k, _)| k == t))
            .is_some_and(|(_, (windowed, _, _))| !windowed);
        tracked
    }

    /// Whether `read` (a name a test reads) changes in the loop: it, an
    /// attribute of it or an object it is an attribute of is assigned.
    fn varies(&self, read: &String) -> bool {
        // Looked up by the names' dotted prefixes: loops that call large
        // functions assign hundreds of names.
        self.assigned.contains(read)
            || self.assigned_objects.contains(read.as_str())
            || read
                .match_indices('.')
                .any(|(at, _)| self.assigned.contains(&read[..at]))
    }

    /// The flags (none of whose names the loop changes) that guard gradient
    /// events and get the state's bits: those tested most often.
    fn correlated_flags(&self, guards_events: &[bool]) -> Vec<usize> {
        let varies = |read: &String| self.varies(read);
        let mut order: Vec<usize> = (0..self.raw.len())
            .filter(|&i| {
                matches!(&self.raw[i].class, CondClass::Flag(r) if !r.iter().any(varies))
                    || matches!(&self.raw[i].class, CondClass::NotNone(n) | CondClass::WindowOne(n) if !varies(n))
            })
            .collect();
        // Only flags that guard gradient events matter.
        order.retain(|&i| guards_events[i]);
        order.sort_by_key(|&i| std::cmp::Reverse(self.tested[i]));
        order.truncate(MAX_FLAGS as usize);
        order
    }

    /// The kind of every condition (its bit in the state, if it gets one);
    /// returns the cap of the tracked counter's residues.
    fn classify_conditions(
        &mut self,
        guards_events: &[bool],
        tracked: Option<&(String, String)>,
        correlated: &[usize],
    ) -> u32 {
        let mut bits = 0u32;
        let mut iteration_bits = 0u32;
        let mut outer_bits = 0u16;
        let mut cap = 0;
        let varies = |read: &String| self.varies(read);
        let set_before_nested = |class: &CondClass, i: usize| {
            let assigned = match class {
                CondClass::Flag(reads) => reads.iter().any(varies),
                CondClass::NotNone(name) => varies(name),
                _ => false,
            };
            assigned && guards_events[i] && self.fixed_in_nested[i]
        };
        // Where the state's bits run out, the tests left without one are
        // free each time they are asked: the tests that decide a step or a
        // reset get theirs first (accelerate's window before any).
        let mut order: Vec<usize> = (0..self.raw.len()).collect();
        order.sort_by_key(|&i| {
            let accelerate = matches!(&self.raw[i].class,
                CondClass::Counter { counter, .. } if counter == crate::ir::ACCELERATE_COUNTER);
            (!accelerate, !guards_events[i])
        });
        let mut kinds: Vec<Option<Kind>> = vec![None; self.raw.len()];
        for i in order {
            let c = &self.raw[i];
            let correlates = correlated.contains(&i);
            // The loop whose last iteration a whole-run test of its own
            // counter marks (`i == len(loader) - 1`).
            let last_of = match &c.class {
                CondClass::Counter {
                    counter,
                    residue: Residue::High(1),
                    whole_run: true,
                    ..
                } => self.head_counting_from_zero(counter),
                _ => None,
            };
            let kind = match &c.class {
                // A flag the loop sets (`skip = True`): known from the
                // assignment on, within the iteration.
                CondClass::Flag(_)
                    if self.set_conds.contains(&i) && iteration_bits < MAX_ITERATION_BITS =>
                {
                    iteration_bits += 1;
                    Kind::Iteration {
                        bit: iteration_bits - 1,
                        implies_boundary: false,
                    }
                }
                CondClass::Counter {
                    counter,
                    modulus,
                    residue,
                    at_one,
                    ..
                } if tracked == Some(&(counter.clone(), modulus.clone())) => {
                    cap = cap.max(residue.magnitude().saturating_add(1));
                    let bit =
                        (guards_events[i] && iteration_bits < MAX_ITERATION_BITS).then(|| {
                            iteration_bits += 1;
                            iteration_bits - 1
                        });
                    Kind::Counter(*residue, *at_one, bit)
                }
                // The first iteration of the analysed loop, by its own
                // counter (`if i == 0: zero_grad()` beside a `%` window).
                CondClass::Counter {
                    counter,
                    residue: Residue::Low(0),
                    whole_run: true,
                    ..
                } if self.counts_from_zero(counter) => Kind::FirstOnly,
                // The last iteration of a loop by its own counter (`if i ==
                // len(loader) - 1: step()` beside a `%` window).
                CondClass::Counter { .. } if last_of.is_some() => {
                    last_of.map_or(Kind::Unknown, Kind::LastOnly)
                }
                // Another test of a counter: the same within an iteration.
                CondClass::Counter {
                    counter,
                    modulus,
                    residue,
                    ..
                } if iteration_bits < MAX_ITERATION_BITS => {
                    iteration_bits += 1;
                    let multiple = tracked.is_some_and(|(c, k)| {
                        c == counter
                            && *residue == Residue::Low(0)
                            && modulus != k
                            && factors(modulus).iter().any(|f| f == k)
                    });
                    Kind::Iteration {
                        bit: iteration_bits - 1,
                        implies_boundary: multiple,
                    }
                }
                CondClass::Counter { .. } => Kind::Unknown,
                CondClass::Skip => Kind::Skip(
                    (self.tested[i] >= 2
                        && guards_events[i]
                        && iteration_bits < MAX_ITERATION_BITS)
                        .then(|| {
                            iteration_bits += 1;
                            iteration_bits - 1
                        }),
                ),
                CondClass::Always => Kind::Always,
                // Set in an iteration of the analysed loop before a nested
                // loop that tests it: the same throughout that iteration.
                CondClass::Flag(_) | CondClass::NotNone(_)
                    if set_before_nested(&c.class, i) && iteration_bits < MAX_ITERATION_BITS =>
                {
                    iteration_bits += 1;
                    outer_bits |= 1 << (iteration_bits - 1);
                    Kind::Iteration {
                        bit: iteration_bits - 1,
                        implies_boundary: false,
                    }
                }
                // Computed in the loop and tested more than once
                // (`ok = isfinite(norm)`, then `if ok: step()` and `if ok:
                // zero_grad()`): the same way within an iteration.
                CondClass::Flag(reads)
                    if reads.iter().any(varies)
                        && self.tested[i] >= 2
                        && guards_events[i]
                        && iteration_bits < MAX_ITERATION_BITS =>
                {
                    iteration_bits += 1;
                    Kind::Iteration {
                        bit: iteration_bits - 1,
                        implies_boundary: false,
                    }
                }
                CondClass::Flag(reads) if reads.iter().any(varies) => Kind::Unknown,
                CondClass::Flag(_) if correlates => {
                    bits += 1;
                    Kind::Flag(Some(bits - 1))
                }
                CondClass::Flag(_) => Kind::Flag(None),
                CondClass::NotNone(name) if varies(name) => Kind::AfterFirst,
                CondClass::NotNone(_) if correlates => {
                    bits += 1;
                    Kind::Flag(Some(bits - 1))
                }
                CondClass::NotNone(_) => Kind::Flag(None),
                CondClass::WindowOne(modulus)
                    if tracked.is_some_and(|(_, m)| m == modulus) && !varies(modulus) =>
                {
                    Kind::WindowOne
                }
                // Otherwise a flag like any other.
                CondClass::WindowOne(modulus) if varies(modulus) => Kind::Unknown,
                CondClass::WindowOne(_) if correlates => {
                    bits += 1;
                    Kind::Flag(Some(bits - 1))
                }
                CondClass::WindowOne(_) => Kind::Flag(None),
                CondClass::Bound if iteration_bits < MAX_ITERATION_BITS => {
                    iteration_bits += 1;
                    Kind::Iteration {
                        bit: iteration_bits - 1,
                        implies_boundary: false,
                    }
                }
                CondClass::Bound => Kind::Unknown,
            };
            kinds[i] = Some(kind);
        }
        let conds = self.raw.iter().zip(kinds).map(|(c, kind)| Cond {
            key: c.key.clone(),
            kind: kind.unwrap_or(Kind::Unknown),
        });
        self.cfg.conds.extend(conds);
        self.exclusive_flags();
        self.outer_bits = outer_bits;
        cap
    }

    /// Which flag bits exclude each other: equality tests of one value
    /// against different literals.
    fn exclusive_flags(&mut self) {
        let tests: Vec<(u32, (&str, String))> = self
            .cfg
            .conds
            .iter()
            .zip(&self.raw)
            .filter_map(|(c, raw)| match (&c.kind, &raw.class) {
                // The subject is all the test reads (not `x or t == "a"`).
                (Kind::Flag(Some(bit)), CondClass::Flag(reads)) => {
                    let (subject, value) = equals_literal(&c.key)?;
                    (reads.len() == 1 && reads[0] == subject).then_some((*bit, (subject, value)))
                }
                _ => None,
            })
            .collect();
        for (a, (subject, value)) in &tests {
            for (b, (other_subject, other_value)) in &tests {
                if subject == other_subject && value != other_value {
                    self.cfg.exclusive[*a as usize] |= 1 << b;
                }
            }
        }
    }

    /// The iteration bits of the flags the loop sets whose value carries
    /// over: the file sets them only to `True` or `False`.
    fn carried_bits(&self) -> u16 {
        let mut bits = 0u16;
        for &i in &self.set_conds {
            let carried = self.program.literal_flags.contains(&self.raw[i].key);
            if let (true, Kind::Iteration { bit, .. }) = (carried, &self.cfg.conds[i].kind) {
                bits |= 1 << bit;
            }
        }
        bits
    }

    /// The head of the one loop (the analysed one or a nested one) whose
    /// own counter `counter` starts at 0 on each run (none where two
    /// loops count that name).
    fn head_counting_from_zero(&self, counter: &str) -> Option<usize> {
        let mut heads = self.cfg.heads.iter().enumerate().filter(|(_, cs)| {
            cs.as_ref()
                .is_some_and(|cs| cs.iter().any(|c| c.name == counter && c.start == Some(0)))
        });
        let (head, _) = heads.next()?;
        heads.next().is_none().then_some(head)
    }

    /// Whether `counter` is the analysed loop's own counter, starting at 0
    /// on each run (`for i, b in enumerate(loader)`).
    fn counts_from_zero(&self, counter: &str) -> bool {
        self.cfg.heads[self.cfg.head]
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.name == counter && c.start == Some(0)))
    }

    /// The iteration bits of the tests inside each nested loop.
    fn inner_loop_bits(&self) -> Vec<u16> {
        let mut inner_bits = vec![0u16; self.cfg.events.len()];
        for (n, assumed) in self.cfg.assumes.iter().enumerate() {
            for &(c, _) in assumed {
                let bit = match self.cfg.conds[c].kind {
                    Kind::Iteration { bit, .. }
                    | Kind::Counter(_, _, Some(bit))
                    | Kind::Skip(Some(bit)) => bit,
                    _ => continue,
                };
                if self.outer_bits & (1 << bit) != 0 {
                    continue;
                }
                for &l in &self.cfg.loops[n] {
                    inner_bits[l] |= 1 << bit;
                }
            }
        }
        inner_bits
    }

    /// Where the window opens: after the residue of the tracked counter
    /// that guards a step.
    fn window_start(&self) -> Option<Residue> {
        let step_residue = (0..self.cfg.events.len())
            .filter(|&n| matches!(self.cfg.events[n], Some((Event::Step(_), _))))
            .flat_map(|n| self.cfg.guards[n].iter())
            .find_map(|&(c, v)| match self.cfg.conds[c].kind {
                Kind::Counter(r, _, _) if v => Some(r),
                _ => None,
            });
        step_residue.map(|r| match r {
            Residue::Low(n) => Residue::Low(n.saturating_add(1)),
            Residue::High(1) | Residue::High(0) => Residue::Low(0),
            Residue::High(n) => Residue::High(n - 1),
        })
    }

    /// An optimizer over a model the loop builds anew starts fresh.
    fn fresh_optimizers_of_new_models(&mut self) {
        let mut events = std::mem::take(&mut self.cfg.events);
        for event in events.iter_mut().flatten() {
            if let (Event::Reset(Reset::NewModelOptimizer { optimizer, model }), _) = event {
                if self.varies(model) {
                    event.0 = Event::Reset(Reset::NewOptimizer(optimizer.clone()));
                }
            }
        }
        self.cfg.events = events;
    }

    fn edges(&mut self, from: &[usize], to: usize) {
        for &f in from {
            if !self.cfg.succ[f].contains(&to) {
                self.cfg.succ[f].push(to);
            }
        }
    }

    fn back_edges(&mut self, from: &[usize], head: usize) {
        self.edges(from, head);
        self.cfg.back_edges.extend(from.iter().map(|&f| (f, head)));
    }

    fn seq(&mut self, nodes: &[Node], mut frontier: Vec<usize>, ctx: &mut Ctx) -> Vec<usize> {
        let depth = self.guard_stack.len();
        for node in nodes {
            frontier = self.stmt(node, frontier, ctx);
            // After `if not last_step: continue`, the rest runs only when
            // the test failed: it guards what follows as an `else` would.
            if let Node::If {
                branches,
                exhaustive: false,
                ..
            } = node
            {
                if branches.iter().all(|b| crate::ir::leaves(b)) {
                    let fallthrough = std::mem::take(&mut self.fallthrough);
                    self.guard_stack.extend(fallthrough);
                }
            }
        }
        self.guard_stack.truncate(depth);
        frontier
    }

    fn stmt(&mut self, node: &Node, frontier: Vec<usize>, ctx: &mut Ctx) -> Vec<usize> {
        match node {
            Node::Event(Event::Call(name), _) => {
                let arguments = std::mem::take(&mut self.arguments);
                let handed = std::mem::take(&mut self.handed);
                self.call(name, arguments, &handed, frontier, ctx.accumulate)
            }
            Node::Handed(handed) => {
                self.handed = handed.clone();
                frontier
            }
            // Read by the call that follows; an argument that is the
            // caller's own parameter reads the caller's argument.
            Node::Arguments(arguments) => {
                self.arguments = arguments
                    .iter()
                    .map(|(p, t)| (p.clone(), self.substituted(t).unwrap_or_else(|| t.clone())))
                    .collect();
                frontier
            }
            // In `accelerator.accumulate`, a prepared optimizer's step and
            // reset act only on the micro-step that closes the window.
            // (Under DeepSpeed the reset is a no-op: left to the facts.)
            Node::Event(
                event @ (Event::Step(Updater::Optimizer(_)) | Event::Reset(Reset::Optimizer(_))),
                span,
            ) if ctx.accumulate
                && !(self.program.deepspeed && matches!(event, Event::Reset(_))) =>
            {
                self.window_closing_event(event, span, &frontier)
            }
            Node::Event(event, span) => {
                let n = self.node(Some((event.clone(), *span)), ctx.accumulate);
                self.edges(&frontier, n);
                vec![n]
            }
            Node::If {
                branches,
                exhaustive,
                tests,
                ..
            } => self.branches(branches, *exhaustive, tests, &frontier, ctx),
            // Read as doing nothing to gradients (see `crate::assumptions`).
            Node::Opaque(_) => frontier,
            Node::Loop {
                body,
                assigned,
                counters,
                ..
            } => self.loop_node(body, assigned, counters, frontier, ctx),
            // With a window of one every micro-step closes it: no gating.
            Node::Accumulate(body)
                if self.program.accelerate_window_one && self.window_unset(body) =>
            {
                self.seq(body, frontier, ctx)
            }
            Node::Accumulate(body) => {
                let outer = ctx.accumulate;
                ctx.accumulate = true;
                let out = self.seq(body, frontier, ctx);
                ctx.accumulate = outer;
                out
            }
            Node::Break => {
                ctx.breaks.extend(frontier);
                Vec::new()
            }
            Node::Continue => {
                if let Some(head) = ctx.head {
                    self.back_edges(&frontier, head);
                }
                // A branch that only resets and leaves (`if skipped:
                // zero_grad(); continue`), no pass or step of its own.
                let only_resets = self.branch_starts.last().is_some_and(|&start| {
                    self.cfg.events[start..].iter().flatten().all(|(e, _)| {
                        !matches!(e, Event::Backward | Event::Step(_) | Event::Call(_))
                    })
                });
                if only_resets {
                    self.cfg.before_continue.extend(&frontier);
                }
                Vec::new()
            }
            Node::Return => {
                if let Some(returns) = ctx.returns.as_mut() {
                    returns.extend(frontier);
                }
                Vec::new()
            }
            Node::Raise => Vec::new(),
            Node::Set(name, value) => {
                let test = Test {
                    cond: crate::ir::Cond {
                        key: name.clone(),
                        class: CondClass::Flag(vec![name.clone()]),
                    },
                    negated: false,
                };
                let (c, _) = self.cond(&test);
                // Set, not tested.
                self.tested[c] -= 1;
                self.set_conds.insert(c);
                let n = self.node(None, ctx.accumulate);
                self.cfg.sets[n].push((c, *value));
                self.edges(&frontier, n);
                vec![n]
            }
        }
    }

    /// Whether the `accelerator.accumulate` block `body` belongs to a file
    /// whose accelerator is built with no window (this one, or the other
    /// file its events come from).
    fn window_unset(&self, body: &[Node]) -> bool {
        fn first_span(nodes: &[Node]) -> Option<Span> {
            nodes.iter().find_map(|n| match n {
                Node::Event(_, s) => Some(*s),
                Node::If { branches, .. } => branches.iter().find_map(|b| first_span(b)),
                Node::Loop { body, .. } | Node::Accumulate(body) => first_span(body),
                _ => None,
            })
        }
        match first_span(body).and_then(Span::foreign_file) {
            Some(file) => self.program.accelerate_unset_files.contains(&file),
            None => self.program.accelerate_window_unset,
        }
    }

    /// A prepared optimizer's step or reset in `accelerator.accumulate`: it
    /// acts only on the micro-step that closes the window (a sync test).
    fn window_closing_event(
        &mut self,
        event: &Event,
        span: &Span,
        frontier: &[usize],
    ) -> Vec<usize> {
        let sync = Test {
            cond: crate::ir::Cond {
                key: "<accelerate sync>".into(),
                class: CondClass::Counter {
                    counter: crate::ir::ACCELERATE_COUNTER.into(),
                    modulus: crate::ir::ACCELERATE_WINDOW.into(),
                    residue: Residue::High(1),
                    at_one: true,
                    whole_run: false,
                },
            },
            negated: false,
        };
        let group = self.cfg.events.len();
        let (start, _, _) = self.alternatives(&[vec![sync.clone()]], frontier, true, group);
        let (mut out, _, _) = self.alternatives(&[vec![sync.flipped()]], frontier, true, group);
        let assumed = self.cond(&sync);
        self.guard_stack.push(assumed);
        let n = self.node(Some((event.clone(), *span)), true);
        self.guard_stack.pop();
        self.edges(&start, n);
        out.push(n);
        out
    }

    /// A test of the inlined function's parameter (`if update:`) read as
    /// what its call handed it (`(i + 1) % k == 0`); `None` when the test
    /// reads no such parameter.
    fn substituted(&self, tested: &Tested) -> Option<Tested> {
        let handed = self.substitutions.last().filter(|h| !h.is_empty())?;
        let find = |t: &Test| match &t.cond.class {
            CondClass::Flag(reads) if reads.len() == 1 && reads[0] == t.cond.key => handed
                .iter()
                .find(|(p, _)| *p == t.cond.key)
                .map(|(_, h)| if t.negated { &h.fails } else { &h.holds }),
            _ => None,
        };
        let mut tests = tested.holds.iter().chain(&tested.fails).flatten();
        if !tests.any(|t| find(t).is_some()) {
            return None;
        }
        let side = |alternatives: &[Vec<Test>]| -> Vec<Vec<Test>> {
            let mut out = Vec::new();
            for alternative in alternatives {
                let mut acc = vec![Vec::new()];
                for t in alternative {
                    acc = match find(t) {
                        Some(h) => Tested::both(&acc, h),
                        None => Tested::both(&acc, &[vec![t.clone()]]),
                    };
                }
                out.extend(acc);
            }
            out
        };
        Some(Tested {
            holds: side(&tested.holds),
            fails: side(&tested.fails),
        })
    }

    /// An `if` and its `elif`s and `else`: branch i runs when its test holds
    /// and the tests above failed.
    fn branches(
        &mut self,
        branches: &[Vec<Node>],
        exhaustive: bool,
        tests: &[Tested],
        frontier: &[usize],
        ctx: &mut Ctx,
    ) -> Vec<usize> {
        let handed: Vec<Option<Tested>> = tests.iter().map(|t| self.substituted(t)).collect();
        let substituted: Vec<Tested>;
        let tests = if handed.iter().any(Option::is_some) {
            substituted = handed
                .into_iter()
                .zip(tests)
                .map(|(h, t)| h.unwrap_or_else(|| t.clone()))
                .collect();
            &substituted[..]
        } else {
            tests
        };
        let group = self.cfg.events.len();
        // Branch i runs when its test holds and the tests above failed.
        let failed = |upto: usize| -> Vec<Vec<Test>> {
            tests[..upto.min(tests.len())]
                .iter()
                .fold(vec![Vec::new()], |acc, t| Tested::both(&acc, &t.fails))
        };
        // What the path that skips every branch assumes (for `seq`), set
        // once the branches (and their own `if`s) are built.
        let mut fallthrough = Vec::new();
        let mut out = if exhaustive {
            Vec::new()
        } else {
            let skipped = failed(branches.len());
            let (start, common, _) = self.alternatives(&skipped, frontier, ctx.accumulate, group);
            fallthrough = common;
            start
        };
        for (i, branch) in branches.iter().enumerate() {
            let holds = tests.get(i).map_or(vec![Vec::new()], |t| t.holds.clone());
            let assumes = Tested::both(&failed(i), &holds);
            let depth = self.guard_stack.len();
            let (start, common, each) =
                self.alternatives(&assumes, frontier, ctx.accumulate, group);
            self.guard_stack.extend(common);
            let several = each.len() > 1;
            if several {
                self.entry_stack.push(each);
            }
            self.branch_starts.push(self.cfg.events.len());
            out.extend(self.seq(branch, start, ctx));
            self.branch_starts.pop();
            if several {
                self.entry_stack.pop();
            }
            self.guard_stack.truncate(depth);
        }
        self.fallthrough = fallthrough;
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A nested loop: its head, its body, the way back and the breaks out.
    fn loop_node(
        &mut self,
        body: &[Node],
        assigned: &[String],
        counters: &[Counter],
        frontier: Vec<usize>,
        ctx: &mut Ctx,
    ) -> Vec<usize> {
        self.assigned.extend(assigned.iter().cloned());
        let head = self.node(None, ctx.accumulate);
        self.cfg.heads[head] = Some(counters.to_vec());
        self.edges(&frontier, head);
        let mut inner = Ctx {
            head: Some(head),
            breaks: Vec::new(),
            returns: ctx.returns.take(),
            accumulate: ctx.accumulate,
        };
        self.loop_stack.push(head);
        self.nested_assigned.push(Assigned::new(assigned));
        // A `continue` in the body is this loop's: branches around the
        // loop are not its.
        let outer_branches = std::mem::take(&mut self.branch_starts);
        let mut out = self.seq(body, vec![head], &mut inner);
        self.branch_starts = outer_branches;
        self.nested_assigned.pop();
        self.loop_stack.pop();
        ctx.returns = inner.returns.take();
        self.back_edges(&out, head);
        out.extend(inner.breaks);
        out
    }

    /// Inlines a function of the file, or of another file of the invocation;
    /// unknown or recursive calls are opaque. A call `name|receiver` (a
    /// method of a class of another file, called on `receiver`) inlines the
    /// method with `self` read as `receiver`.
    fn call(
        &mut self,
        name: &str,
        arguments: Vec<(Param, Tested)>,
        optimizers: &[(Param, String)],
        frontier: Vec<usize>,
        accumulate: bool,
    ) -> Vec<usize> {
        let program = self.program;
        let (target, receiver) = match name.split_once('|') {
            Some((t, r)) => (t, Some(r)),
            None => (name, None),
        };
        let Some(function) = program.function(target) else {
            return frontier;
        };
        if self.calls.len() >= MAX_INLINE_DEPTH || self.calls.iter().any(|c| c == target) {
            return frontier;
        }
        self.calls.push(target.to_string());
        self.frames_made += 1;
        self.frame_stack.push(self.frames_made);
        // A parameter the callee assigns is its own from there on.
        let handed = arguments
            .into_iter()
            .filter_map(|(p, t)| Some((function.bound_parameter(&p)?.to_string(), t)))
            .collect();
        self.substitutions.push(handed);
        let renamed;
        let body = match receiver.filter(|r| *r != "self") {
            Some(r) => {
                renamed = rebind_self(&function.body, r);
                self.assigned
                    .extend(function.assigned.iter().map(|a| rebind(a, r)));
                &renamed
            }
            None => {
                self.assigned.extend(function.assigned.iter().cloned());
                &function.body
            }
        };
        // The optimizers handed in, known by the caller's names in the
        // callee's events (its `optim.zero_grad()` resets the caller's
        // `opt`), unless the callee binds the parameter to another.
        let names: Vec<(&str, &str)> = optimizers
            .iter()
            .filter_map(|(p, o)| {
                let param = function.bound_parameter(p).filter(|x| x != o)?;
                Some((param, o.as_str()))
            })
            .collect();
        let handed_renamed;
        let body = if names.is_empty() {
            body
        } else {
            handed_renamed = rename_optimizers(body, &names);
            &handed_renamed
        };
        let mut ctx = Ctx {
            head: None,
            breaks: Vec::new(),
            returns: Some(Vec::new()),
            accumulate,
        };
        let mut out = self.seq(body, frontier, &mut ctx);
        out.extend(ctx.returns.unwrap_or_default());
        self.calls.pop();
        self.frame_stack.pop();
        self.substitutions.pop();
        out
    }
}

/// `self` or `self.x` read as `receiver` (`trainer`, `trainer.x`).
fn rebind(name: &str, receiver: &str) -> String {
    match name.strip_prefix("self") {
        Some("") => receiver.to_string(),
        Some(rest) if rest.starts_with('.') || rest.starts_with('|') => format!("{receiver}{rest}"),
        _ => name.to_string(),
    }
}

/// A method's body with `self` read as `receiver`: the optimizers it steps
/// and resets, and the receivers of the methods it calls.
/// `nodes` with the optimizers named by the first of each pair of `names`
/// (or an attribute of one) named by the second.
fn rename_optimizers(nodes: &[Node], names: &[(&str, &str)]) -> Vec<Node> {
    let r = |s: &String| -> String {
        for (from, to) in names {
            if s == from {
                return to.to_string();
            }
            if let Some(rest) = s.strip_prefix(from).filter(|r| r.starts_with('.')) {
                return format!("{to}{rest}");
            }
        }
        s.clone()
    };
    let event = |event: &Event, span: Span| {
        let event = match event {
            Event::Step(Updater::Optimizer(o)) => Event::Step(Updater::Optimizer(r(o))),
            Event::Reset(Reset::Optimizer(o)) => Event::Reset(Reset::Optimizer(r(o))),
            other => other.clone(),
        };
        Node::Event(event, span)
    };
    map_nodes(nodes, &event, &|span| span, &|s| s.clone())
}

fn rebind_self(nodes: &[Node], receiver: &str) -> Vec<Node> {
    let r = |s: &String| rebind(s, receiver);
    let event = |event: &Event, span: Span| {
        let event = match event {
            Event::Step(Updater::Optimizer(o)) => Event::Step(Updater::Optimizer(r(o))),
            Event::Reset(reset) => Event::Reset(match reset {
                Reset::Optimizer(o) => Reset::Optimizer(r(o)),
                Reset::NewOptimizer(o) => Reset::NewOptimizer(r(o)),
                Reset::Model(m) => Reset::Model(r(m)),
                Reset::NewModelOptimizer { optimizer, model } => Reset::NewModelOptimizer {
                    optimizer: r(optimizer),
                    model: r(model),
                },
                other => other.clone(),
            }),
            Event::Call(name) => match name.split_once('|') {
                Some((t, recv)) => Event::Call(format!("{t}|{}", rebind(recv, receiver))),
                None => Event::Call(name.clone()),
            },
            other => other.clone(),
        };
        Node::Event(event, span)
    };
    map_nodes(nodes, &event, &|span| span, &r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The graph of the first loop of the first function of `source`.
    fn loop_graph(source: &str) -> Cfg {
        let program = crate::frontend::python::lower(source).expect("parses");
        let function = program
            .functions
            .iter()
            .find(|f| f.name == "train")
            .expect("train");
        let Some(Node::Loop {
            body,
            assigned,
            counters,
            ..
        }) = function
            .body
            .iter()
            .find(|n| matches!(n, Node::Loop { .. }))
        else {
            panic!("no loop");
        };
        Cfg::of_loop(&program, body, assigned, counters)
    }

    #[test]
    fn flags_set_in_the_iteration_are_forgotten_after_their_last_test() {
        let mut source = String::from("def train(model, loader, opt):\n    for batch in loader:\n");
        for i in 0..4 {
            source.push_str(&format!("        show{i} = batch.flags[{i}]\n"));
        }
        // Tests that decide events get the state's bits.
        for i in 0..4 {
            source.push_str(&format!(
                "        if show{i}:\n            aux{i}.zero_grad()\n"
            ));
        }
        source.push_str("        opt.zero_grad()\n        model(batch).sum().backward()\n");
        for i in 0..4 {
            source.push_str(&format!("        if show{i}:\n            aux{i}.step()\n"));
        }
        source.push_str("        opt.step()\n");
        let cfg = loop_graph(&source);
        let bits = |pred: &dyn Fn(&Event) -> bool| {
            let nodes = cfg.find(pred);
            assert_eq!(nodes.len(), 1);
            cfg.live[nodes[0]].0
        };
        // Between the two rounds of tests the flags are read again...
        assert_eq!(bits(&|e| matches!(e, Event::Backward)).count_ones(), 4);
        // ...after the second, never before the next iteration sets them.
        assert_eq!(
            bits(&|e| matches!(e, Event::Step(Updater::Optimizer(o)) if o == "opt")),
            0
        );
    }
}
