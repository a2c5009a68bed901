//! The control-flow graph of one loop, calls of same-file functions inlined.
//!
//! Nodes are gradient events; the loop's head node closes every iteration.
//! Nested loops run at least once (a parameter loop `for p in params:` always
//! runs), which keeps the analysis on the side of silence.

use crate::ir::{Event, Node, Program, Span};

const MAX_INLINE_DEPTH: usize = 4;

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
}

struct Ctx {
    head: Option<usize>,
    breaks: Vec<usize>,
    returns: Option<Vec<usize>>,
    accumulate: bool,
}

struct Builder<'p> {
    program: &'p Program,
    cfg: Cfg,
    calls: Vec<String>,
}

impl Cfg {
    /// Builds the graph of a loop whose body is `body`.
    pub fn of_loop(program: &Program, body: &[Node]) -> Cfg {
        let mut b = Builder {
            program,
            cfg: Cfg::default(),
            calls: Vec::new(),
        };
        let head = b.node(None, false);
        b.cfg.head = head;
        let mut ctx = Ctx {
            head: Some(head),
            breaks: Vec::new(),
            returns: None,
            accumulate: false,
        };
        let out = b.seq(body, vec![head], &mut ctx);
        b.back_edges(&out, head);
        b.cfg
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
        self.search(from, to, blocked, need, true)
    }

    /// Like [`Cfg::path`], within one iteration of every loop: no back edge.
    pub fn forward_path(&self, from: usize, to: &[usize], blocked: &[usize]) -> bool {
        self.search(from, to, blocked, None, false)
    }

    fn search(
        &self,
        from: usize,
        to: &[usize],
        blocked: &[usize],
        need: Option<&[usize]>,
        back: bool,
    ) -> bool {
        let n = self.events.len();
        let mut seen = vec![[false; 2]; n];
        let next = |node: usize| {
            self.succ[node]
                .iter()
                .copied()
                .filter(move |&s| back || !self.back_edges.contains(&(node, s)))
        };
        let mut stack: Vec<(usize, bool)> = next(from).map(|s| (s, false)).collect();
        while let Some((node, mut got)) = stack.pop() {
            if blocked.contains(&node) {
                continue;
            }
            if need.is_some_and(|need| need.contains(&node)) {
                got = true;
            }
            if seen[node][got as usize] {
                continue;
            }
            seen[node][got as usize] = true;
            if to.contains(&node) && (need.is_none() || got) {
                return true;
            }
            stack.extend(next(node).map(|s| (s, got)));
        }
        false
    }
}

impl Builder<'_> {
    fn node(&mut self, event: Option<(Event, Span)>, accumulate: bool) -> usize {
        self.cfg.events.push(event);
        self.cfg.in_accumulate.push(accumulate);
        self.cfg.succ.push(Vec::new());
        self.cfg.events.len() - 1
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
        for node in nodes {
            frontier = self.stmt(node, frontier, ctx);
        }
        frontier
    }

    fn stmt(&mut self, node: &Node, frontier: Vec<usize>, ctx: &mut Ctx) -> Vec<usize> {
        match node {
            Node::Event(Event::Call(name), _) => self.call(name, frontier, ctx.accumulate),
            Node::Event(event, span) => {
                let n = self.node(Some((event.clone(), *span)), ctx.accumulate);
                self.edges(&frontier, n);
                vec![n]
            }
            Node::If {
                branches,
                exhaustive,
            } => {
                let mut out = if *exhaustive {
                    Vec::new()
                } else {
                    frontier.clone()
                };
                for branch in branches {
                    out.extend(self.seq(branch, frontier.clone(), ctx));
                }
                out.sort_unstable();
                out.dedup();
                out
            }
            Node::Loop { body, .. } => {
                let head = self.node(None, ctx.accumulate);
                self.edges(&frontier, head);
                let mut inner = Ctx {
                    head: Some(head),
                    breaks: Vec::new(),
                    returns: ctx.returns.take(),
                    accumulate: ctx.accumulate,
                };
                let mut out = self.seq(body, vec![head], &mut inner);
                ctx.returns = inner.returns.take();
                self.back_edges(&out, head);
                out.extend(inner.breaks);
                out
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
                Vec::new()
            }
            Node::Return => {
                if let Some(returns) = ctx.returns.as_mut() {
                    returns.extend(frontier);
                }
                Vec::new()
            }
        }
    }

    /// Inlines a same-file function; unknown or recursive calls are opaque.
    fn call(&mut self, name: &str, frontier: Vec<usize>, accumulate: bool) -> Vec<usize> {
        let program = self.program;
        let Some(function) = program.function(name) else {
            return frontier;
        };
        if self.calls.len() >= MAX_INLINE_DEPTH || self.calls.iter().any(|c| c == name) {
            return frontier;
        }
        self.calls.push(name.to_string());
        let mut ctx = Ctx {
            head: None,
            breaks: Vec::new(),
            returns: Some(Vec::new()),
            accumulate,
        };
        let mut out = self.seq(&function.body, frontier, &mut ctx);
        out.extend(ctx.returns.unwrap_or_default());
        self.calls.pop();
        out
    }
}
