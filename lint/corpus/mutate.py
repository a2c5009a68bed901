#!/usr/bin/env python3
"""Mutation harness: gradlint's recall on single-edit bugs planted into real,
correct training loops of public repositories, and its false-positive rate on
the untouched originals.

Inputs are repositories at pinned commits, listed in TSV files
(``OWNER/NAME<TAB>COMMIT<TAB>GITDIR``, GITDIR a bare or non-bare git
directory). For each repository the harness

1. exports the tree at COMMIT (its Python files, notebooks and gradlint /
   pyproject configuration, blob by blob: a snapshot may lack its large
   binary files, which ``git archive`` would then fail on) into the work
   folder;
2. lints the whole tree once (``gradlint --format json --confidence all .``):
   the original's findings;
3. finds the training loops with the pattern the mutants need (``ast``): a
   ``for``/``while`` whose own body (branches, ``with`` and ``try`` included;
   nested loops and functions not) runs ``backward()`` and an optimizer's
   ``X.step()`` (or ``scaler.step(X)``) after it, each stepped optimizer
   reset in that body (``X.zero_grad()``, ``model.zero_grad()`` or a
   ``for p in ...parameters(): p.grad = None`` loop);
4. plants one bug at a time into each such loop that gradlint leaves clean on
   the original (no finding in the loop's lines at any tier): the file is
   rewritten in place, the whole tree linted again (as a user runs it) and
   the file restored.

Mutant kinds (expected codes, expected line):

* ``delete-reset``: the loop's only reset of its only optimizer deleted
  (GL001|GL002|GL005 at the step);
* ``hoist-reset``: the reset moved to just before the loop header, at the
  loop's indentation (GL001|GL002 at the step);
* ``reset-before-step``: the reset moved to the line right before the step,
  after the backward pass (GL003 at the moved reset);
* ``reset-in-window``: in an accumulation loop (step under ``if ... % k``)
  whose reset is under the window condition too, the reset moved to the top
  of the loop body (GL004 at the moved reset);
* ``one-of-several``: in a loop with two or more optimizers, each reset, one
  optimizer's reset deleted (GL001|GL002|GL005 at that optimizer's step);
* ``skip-after-backward``: ``if not torch.isfinite(loss): continue``
  inserted right after the backward pass, in a loop whose only reset comes
  after the step (GL008 at the step or the inserted lines).

With ``--functions``, per-batch functions are mutated too and reported apart:
a function whose own body (outside its loops) runs backward, a step and the
reset, called inside a loop of the tree (by a name that is not a common
method name such as ``train`` or ``step``) and never from a loop that resets
gradients itself. A reset deleted there piles up across the caller's
iterations (``delete-reset``, ``one-of-several``; ``reset-before-step``).

A mutant is skipped when a guard says the edit would not be a real bug or
could not be made cleanly (each guard is counted): the reset inside a nested
function or loop, several resets of one optimizer, a called function of the
tree that resets gradients itself, a statement sharing its line, the
optimizer bound inside the loop (hoisting would break it), a mutated file
that does not compile, ...

A mutant is DETECTED at a tier when gradlint's output has a finding of that
tier in the mutated file, with an accepted code, within +-2 lines of an
expected line, that the original did not have (original findings are mapped
through the edit's line shift). A finding without ``confidence`` counts as
``high``; the default tier is ``high`` (what gradlint prints by default).

The false-positive rate is measured on every loop with the pattern (the
loops mutants are drawn from, before the "gradlint leaves it clean" filter):
the share of them where gradlint reports a finding inside the loop's lines on
the untouched original, at the default tier and at all tiers.

Files gradlint does not lint (hidden paths such as ``.ipynb_checkpoints``,
``.gitignore``d ones) are not mutated. When the binary has no ``--confidence``
option, the default output is all there is and both tiers read the same.

Usage::

    python3 lint/corpus/mutate.py --repos lint/corpus/wild.toml --mirrors DIR \\
        --gradlint target/release/gradlint --work /tmp/mut/work --jobs 2 \\
        --sample 30 --functions --max-loops-per-repo 0 --json /tmp/mut/out.json

Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = (
    "delete-reset",
    "hoist-reset",
    "reset-before-step",
    "reset-in-window",
    "one-of-several",
    "skip-after-backward",
)
ACCEPT = {
    "delete-reset": {"GL001", "GL002", "GL005"},
    "hoist-reset": {"GL001", "GL002"},
    "reset-before-step": {"GL003"},
    "reset-in-window": {"GL004"},
    "one-of-several": {"GL001", "GL002", "GL005"},
    "skip-after-backward": {"GL008"},
}
TIERS = {"high": {"high"}, "all": {"high", "medium", "low"}}
SLACK = 2  # +- lines around an expected line
EXPORTED = (".py", ".ipynb")
CONFIGS = ("gradlint.toml", "pyproject.toml")
SCHEDULER = re.compile(r"sched|lr|warm|swa|ema|plateau|anneal|decay", re.I)
OPTIMIZER = re.compile(r"opt|solver", re.I)
MAX_FILE_BYTES = 2_000_000


# --------------------------------------------------------------------------
# gradlint


@dataclass
class Finding:
    code: str
    path: str
    line: int
    confidence: str  # high | medium | low (missing: high)
    cell: int | None = None
    help: str = ""

    def key(self) -> tuple:
        return (self.code, self.path, self.line, self.cell)


class Lint:
    """Runs gradlint on a tree; parses its JSON."""

    def __init__(self, binary: str, confidence_all: bool, threads: int, timeout: int):
        self.binary = binary
        self.confidence_all = confidence_all
        self.threads = threads
        self.timeout = timeout

    def cmd(self) -> list[str]:
        cmd = [self.binary, "--format", "json"]
        if self.confidence_all:
            cmd += ["--confidence", "all"]
        return cmd + ["."]

    def run(self, tree: Path) -> tuple[list[Finding], float, str]:
        """Findings, seconds, and an error ('' when the output was read)."""
        env = dict(os.environ, RAYON_NUM_THREADS=str(self.threads))
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                self.cmd(), cwd=tree, capture_output=True, env=env, timeout=self.timeout
            )
        except subprocess.TimeoutExpired:
            return [], time.monotonic() - t0, f"timeout after {self.timeout}s"
        dt = time.monotonic() - t0
        try:
            data = json.loads(done.stdout)
        except json.JSONDecodeError:
            err = done.stderr.decode(errors="replace").strip()[-300:]
            return [], dt, f"exit {done.returncode}, no JSON: {err}"
        out = []
        for d in data.get("diagnostics", []):
            out.append(
                Finding(
                    code=d.get("code", ""),
                    path=norm(d.get("path", "")),
                    line=int(d.get("line", 0)),
                    confidence=d.get("confidence") or "high",
                    cell=d.get("cell"),
                    help=d.get("help", ""),
                )
            )
        return out, dt, ""


def norm_help(text: str) -> str:
    """A help text with `./` dropped from the paths it names."""
    return re.sub(r"(?<![\w.])\./", "", text.replace("\\", "/"))


def norm(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def probe_confidence(binary: str) -> bool:
    """Whether the binary accepts `--confidence all`."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "a.py").write_text("x = 1\n")
        done = subprocess.run(
            [binary, "--format", "json", "--confidence", "all", "."],
            cwd=d,
            capture_output=True,
        )
        if done.returncode == 2 and b"confidence" in done.stderr:
            return False
        try:
            json.loads(done.stdout)
            return True
        except json.JSONDecodeError:
            return False


# --------------------------------------------------------------------------
# export


def not_linted(root: Path, rels: list[str]) -> set[str]:
    """The files gradlint's walk leaves out: hidden paths, and those matched by
    `.gitignore`/`.ignore` (honoured outside a git checkout too), asked of git
    in a throwaway repository."""
    out = {r for r in rels if any(part.startswith(".") for part in r.split("/"))}
    rest = [r for r in rels if r not in out]
    if not rest:
        return out
    gd = root / ".git"
    try:
        if subprocess.run(["git", "init", "-q", str(root)], capture_output=True).returncode != 0:
            return out
        for name in (".ignore",):
            # git reads only .gitignore: copy .ignore rules into info/exclude
            # is not exact (they are per folder); read the top-level one only.
            top = root / name
            if top.is_file():
                (gd / "info").mkdir(parents=True, exist_ok=True)
                (gd / "info" / "exclude").write_bytes(top.read_bytes())
        done = subprocess.run(
            ["git", "-C", str(root), "check-ignore", "--no-index", "--stdin", "-z"],
            input="\0".join(rest).encode() + b"\0",
            capture_output=True,
        )
        out |= {p.decode(errors="replace") for p in done.stdout.split(b"\0") if p}
    finally:
        shutil.rmtree(gd, ignore_errors=True)
    return out


def export(gitdir: str, commit: str, dest: Path) -> int:
    """Writes the Python files, notebooks and configs of `commit` under `dest`.

    Returns the number of files written."""
    git = ["git", "--git-dir", gitdir]
    listing = subprocess.run(git + ["ls-tree", "-r", "-z", "-l", commit], capture_output=True)
    if listing.returncode != 0:
        raise RuntimeError("git ls-tree: " + listing.stderr.decode(errors="replace").strip()[-200:])
    wanted = []
    for entry in listing.stdout.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        parts = meta.split()
        if len(parts) < 4:
            continue
        mode, kind, sha, size = parts[:4]
        path = name.decode(errors="replace")
        if kind != b"blob" or mode == b"120000":
            continue
        base = path.rsplit("/", 1)[-1]
        if not (path.endswith(EXPORTED) or base in CONFIGS or base in (".ignore", ".gitignore")):
            continue
        if size.isdigit() and int(size) > MAX_FILE_BYTES * 5:
            continue
        if ".." in path.split("/") or path.startswith("/"):
            continue
        wanted.append((sha.decode(), path))
    if not wanted:
        return 0
    batch = subprocess.run(
        git + ["cat-file", "--batch"],
        input="".join(f"{sha}\n" for sha, _ in wanted).encode(),
        capture_output=True,
    )
    data = batch.stdout
    pos = 0
    written = 0
    for sha, path in wanted:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        header = data[pos:nl].split()
        pos = nl + 1
        if len(header) < 3 or header[1] == b"missing":
            continue
        size = int(header[2])
        blob = data[pos : pos + size]
        pos += size + 1
        out = dest / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
        written += 1
    return written


# --------------------------------------------------------------------------
# loop analysis


def src(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001
        return "?"


def is_call_attr(node: ast.AST, attr: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attr
    )


def walk_no_scopes(node: ast.AST):
    """ast.walk that does not enter nested functions, classes or lambdas."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        for c in ast.iter_child_nodes(n):
            if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            stack.append(c)


LOOPS = (ast.For, ast.AsyncFor, ast.While)
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


@dataclass
class Stmt:
    """A statement in a loop's own body, where it lies."""

    node: ast.stmt
    block: list  # the statement list it is in
    ancestors: list  # compound statements between the loop and it (innermost last)

    @property
    def line(self) -> int:
        return self.node.lineno

    @property
    def end(self) -> int:
        return self.node.end_lineno or self.node.lineno


@dataclass
class Reset:
    stmt: Stmt
    form: str  # opt | model | params
    target: str  # the receiver's text (opt: the optimizer)


@dataclass
class Step:
    stmt: Stmt
    opt: str
    via_scaler: bool


def param_reset_loop(node: ast.stmt) -> bool:
    """`for p in model.parameters(): p.grad = None` (or `.zero_()`, under an
    `if p.grad is not None:`)."""
    if not isinstance(node, ast.For) or node.orelse:
        return False
    if "param" not in src(node.iter).lower():
        return False

    def ok(stmts) -> bool:
        if not stmts:
            return False
        for s in stmts:
            if isinstance(s, ast.If) and not s.orelse and "grad" in src(s.test):
                if not ok(s.body):
                    return False
                continue
            if isinstance(s, ast.Assign) and len(s.targets) == 1:
                t = s.targets[0]
                if (
                    isinstance(t, ast.Attribute)
                    and t.attr == "grad"
                    and isinstance(s.value, ast.Constant)
                    and s.value.value is None
                ):
                    continue
                return False
            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call):
                f = s.value.func
                if isinstance(f, ast.Attribute) and f.attr in ("zero_", "detach_", "requires_grad_"):
                    if ".grad" in src(f.value):
                        continue
                return False
            return False
        return True

    return ok(node.body)


def zero_grad_call(stmt: ast.stmt) -> ast.Call | None:
    """The `R.zero_grad(...)` a simple statement is (an expression statement)."""
    if isinstance(stmt, ast.Expr) and is_call_attr(stmt.value, "zero_grad"):
        return stmt.value
    return None


def mentions_reset(node: ast.AST) -> bool:
    for n in ast.walk(node):
        if is_call_attr(n, "zero_grad"):
            return True
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Attribute) and t.attr == "grad":
                    return True
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "zero_":
            if ".grad" in src(n.func.value):
                return True
    return False


@dataclass
class LoopInfo:
    node: ast.stmt
    stmts: list  # every Stmt of its own body
    backwards: list  # Stmt
    backward_calls: list  # ast.Call, parallel to backwards
    steps: list  # Step
    resets: list  # Reset
    nested_resets: int  # resets in nested loops / functions (not the reset loops)
    calls: set  # names called in its own body (functions and methods)
    assigned: set  # names bound in the loop (targets, loop variables)


def scan_loop(loop: ast.stmt) -> LoopInfo:
    info = LoopInfo(loop, [], [], [], [], [], 0, set(), set())
    for n in ast.walk(loop):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            info.assigned.add(n.id)

    def visit(block: list, ancestors: list):
        for s in block:
            st = Stmt(s, block, ancestors)
            info.stmts.append(st)
            if isinstance(s, LOOPS):
                if param_reset_loop(s):
                    info.resets.append(Reset(st, "params", src(s.iter)))
                elif mentions_reset(s):
                    info.nested_resets += 1
                continue
            if isinstance(s, DEFS):
                if mentions_reset(s):
                    info.nested_resets += 1
                continue
            # the statement's own expressions (headers of compound statements)
            if isinstance(s, (ast.If, ast.While)):
                exprs = [s.test]
            elif isinstance(s, (ast.With, ast.AsyncWith)):
                exprs = [i.context_expr for i in s.items]
            elif isinstance(s, ast.Try) or (hasattr(ast, "TryStar") and isinstance(s, ast.TryStar)):
                exprs = []
            elif isinstance(s, ast.Match):
                exprs = [s.subject]
            else:
                exprs = [s]
            for e in exprs:
                for n in walk_no_scopes(e):
                    if not isinstance(n, ast.Call):
                        continue
                    f = n.func
                    if isinstance(f, ast.Name):
                        info.calls.add(f.id)
                    elif isinstance(f, ast.Attribute):
                        info.calls.add(f.attr)
                    if isinstance(f, ast.Attribute) and f.attr == "backward":
                        info.backwards.append(st)
                        info.backward_calls.append(n)
                    elif isinstance(f, ast.Attribute) and f.attr == "step":
                        recv = src(f.value)
                        if not n.args and not n.keywords:
                            if not SCHEDULER.search(recv.rsplit(".", 1)[-1]):
                                info.steps.append(Step(st, recv, False))
                        elif (
                            "scaler" in recv.lower()
                            and len(n.args) == 1
                            and not n.keywords
                        ):
                            info.steps.append(Step(st, src(n.args[0]), True))
                    elif isinstance(f, ast.Attribute) and f.attr == "zero_grad":
                        if e is s and zero_grad_call(s) is n:
                            info.resets.append(Reset(st, "?", src(f.value)))
                        else:
                            info.nested_resets += 1  # inside an expression: not movable
            # nested blocks
            if isinstance(s, ast.If):
                visit(s.body, ancestors + [s])
                visit(s.orelse, ancestors + [s])
            elif isinstance(s, (ast.With, ast.AsyncWith)):
                visit(s.body, ancestors + [s])
            elif isinstance(s, ast.Try) or (hasattr(ast, "TryStar") and isinstance(s, ast.TryStar)):
                visit(s.body, ancestors + [s])
                for h in s.handlers:
                    visit(h.body, ancestors + [s, h])
                visit(s.orelse, ancestors + [s])
                visit(s.finalbody, ancestors + [s])
            elif isinstance(s, ast.Match):
                for c in s.cases:
                    visit(c.body, ancestors + [s, c])

    visit(loop.body, [])
    # reset forms: a receiver stepped in the loop is an optimizer
    stepped = {st.opt for st in info.steps}
    for r in info.resets:
        if r.form == "?":
            r.form = "opt" if r.target in stepped else "model"
    # keep only the steps of optimizers (a receiver reset as an optimizer, or
    # named like one)
    opt_resets = {r.target for r in info.resets if r.form == "opt"}
    info.steps = [
        st for st in info.steps if st.opt in opt_resets or OPTIMIZER.search(st.opt.rsplit(".", 1)[-1])
    ]
    return info


@dataclass
class Optim:
    name: str
    steps: list = field(default_factory=list)  # Step
    resets: list = field(default_factory=list)  # Reset


def pair(info: LoopInfo) -> tuple[dict, list[str]]:
    """Optimizers of the loop with their steps and resets; problems found."""
    problems = []
    opts: dict[str, Optim] = {}
    for st in info.steps:
        opts.setdefault(st.opt, Optim(st.opt)).steps.append(st)
    for r in info.resets:
        if r.form == "opt":
            opts[r.target].resets.append(r)
    free = [o for o in opts.values() if not o.resets]
    others = [r for r in info.resets if r.form != "opt"]
    for r in others:
        if len(opts) == 1:
            next(iter(opts.values())).resets.append(r)
            continue
        # the next step after it of an optimizer without its own reset; else
        # the last one before it
        cands = sorted((st for o in free for st in o.steps), key=lambda s: s.stmt.line)
        after = [st for st in cands if st.stmt.line > r.stmt.line]
        before = [st for st in cands if st.stmt.line < r.stmt.line]
        target = after[0] if after else (before[-1] if before else None)
        if target is None:
            problems.append("unpaired-reset")
            continue
        opts[target.opt].resets.append(r)
    return opts, problems


def loop_pattern(info: LoopInfo) -> tuple[dict | None, str]:
    """The optimizers of a loop with the pattern, or None and why not."""
    if not info.backwards:
        return None, "no-backward"
    if not info.steps:
        return None, "no-step"
    if not info.resets:
        return None, "no-reset"
    opts, problems = pair(info)
    if problems:
        return None, problems[0]
    for o in opts.values():
        if not o.resets:
            return None, "optimizer-not-reset-here"
        first_bw = min(b.line for b in info.backwards)
        if not any(st.stmt.line > first_bw for st in o.steps):
            return None, "no-backward-before-step"
    return opts, ""


# --------------------------------------------------------------------------
# editing by lines


class Skip(Exception):
    """A guard failed: the mutant is not made (the reason is counted)."""


class NotApplicable(Skip):
    """The loop does not have what the kind needs (no accumulation window, the
    reset not after the step, ...): counted apart from guards."""


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split where Python's line numbers do (\\n)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


class Edit:
    """A file's lines, each with its original number (None: inserted)."""

    def __init__(self, lines: list[str]):
        self.lines: list[list] = [[i + 1, t, False] for i, t in enumerate(lines)]
        self.eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"

    def index(self, orig: int) -> int:
        for i, (o, _, _) in enumerate(self.lines):
            if o == orig:
                return i
        raise Skip("line-gone")

    def remove(self, start: int, end: int) -> list[str]:
        out = [t for o, t, _ in self.lines if o is not None and start <= o <= end]
        self.lines = [l for l in self.lines if not (l[0] is not None and start <= l[0] <= end)]
        return out

    def insert_before(self, orig: int, texts: list[str], mark: bool = True):
        i = self.index(orig)
        self.lines[i:i] = [[None, t, mark] for t in texts]

    def insert_after(self, orig: int, texts: list[str], mark: bool = True):
        i = self.index(orig) + 1
        self.lines[i:i] = [[None, t, mark] for t in texts]

    def text(self) -> str:
        return "".join(t for _, t, _ in self.lines)

    def mapping(self) -> dict[int, int]:
        return {o: i + 1 for i, (o, _, _) in enumerate(self.lines) if o is not None}

    def marked(self) -> list[int]:
        return [i + 1 for i, (_, _, m) in enumerate(self.lines) if m]


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def own_lines(st: Stmt, lines: list[str]) -> None:
    """Guard: the statement starts its line, ends its line and shares no line
    with another statement."""
    node = st.node
    first = lines[node.lineno - 1]
    if first[: node.col_offset].strip():
        raise Skip("shares-line")
    last = lines[(node.end_lineno or node.lineno) - 1]
    rest = last.encode()[node.end_col_offset :].decode(errors="replace").strip()
    if rest and not rest.startswith("#"):
        raise Skip("shares-line")
    for other in st.block:
        if other is node:
            continue
        if other.lineno <= (node.end_lineno or node.lineno) and (other.end_lineno or other.lineno) >= node.lineno:
            raise Skip("shares-line")


def moved_text(st: Stmt, lines: list[str], indent: str, eol: str) -> list[str]:
    """The statement's lines, re-indented to `indent`."""
    node = st.node
    chunk = lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
    base = indent_of(chunk[0])
    out = []
    for i, l in enumerate(chunk):
        body = l.rstrip("\r\n")
        if i and body.strip() and not body.startswith(base):
            raise Skip("multiline-dedent")
        out.append((indent + body[len(base) :] if body.strip() else "") + eol)
    return out


def take_out(edit: Edit, st: Stmt, lines: list[str]) -> None:
    """Removes a statement; a block left empty gets `pass`."""
    own_lines(st, lines)
    node = st.node
    edit.remove(node.lineno, node.end_lineno or node.lineno)
    if all(other is node for other in st.block):
        # the only statement of its block: keep the block valid
        ind = indent_of(lines[node.lineno - 1])
        nxt = next((i for i, l in enumerate(edit.lines) if l[0] is not None and l[0] > node.lineno), len(edit.lines))
        edit.lines[nxt:nxt] = [[None, ind + "pass" + edit.eol, False]]


def check_compiles(text: str, path: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(text, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        raise Skip("does-not-compile") from None


def window_if(st: Stmt) -> ast.If | None:
    """The innermost `if` with a `%` test the statement lies under."""
    for a in reversed(st.ancestors):
        if isinstance(a, ast.If):
            for n in ast.walk(a.test):
                if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod):
                    return a
    return None


def reads(node: ast.AST) -> set[str]:
    """Names a statement reads from outside it (not those it binds itself)."""
    load, store = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (load if isinstance(n.ctx, ast.Load) else store).add(n.id)
    return load - store


def built_in_loop(loop: ast.stmt, opt: str) -> bool:
    """The optimizer is (re)constructed inside the loop (`opt = Adam(...)`)."""
    for n in ast.walk(loop):
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call):
            if any(src(t) == opt for t in n.targets):
                return True
    return False


# --------------------------------------------------------------------------
# mutants


@dataclass
class Mutant:
    repo: str
    path: str
    loop_line: int
    kind: str
    form: str  # the reset's form: opt | model | params
    opt: str
    unit: str = "loop"  # loop | function (a per-batch function a loop calls)
    text: str = ""  # the mutated file
    expect_lines: list = field(default_factory=list)  # in the mutated file
    mapping: dict = field(default_factory=dict)
    diff: str = ""
    # results
    detected: dict = field(default_factory=dict)  # tier -> bool
    # tier -> bool: an accepted finding in another file (the step of a class
    # the loop calls, e.g. an optimizer wrapper's `step()`) whose help names
    # the mutated file as the loop's ("The loop that runs it is at PATH:LINE")
    elsewhere: dict = field(default_factory=dict)
    elsewhere_findings: list = field(default_factory=list)
    new_findings: list = field(default_factory=list)  # in the mutated file
    lint_error: str = ""


def diff_of(path: str, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            split_lines(old), split_lines(new), f"a/{path}", f"b/{path}", n=3
        )
    )


def make_mutants(repo: str, path: str, text: str, info: LoopInfo, opts: dict,
                 helper_resets: set, skips: Counter, unit: str = "loop") -> list[Mutant]:
    lines = split_lines(text)
    loop = info.node
    out = []
    is_loop = unit == "loop"

    def attempt(kind: str, form: str, opt: str, build):
        try:
            edit = Edit(lines)
            expect = build(edit)
            new = edit.text()
            check_compiles(new, path)
            m = Mutant(repo, path, loop.lineno, kind, form, opt, unit)
            m.text = new
            m.expect_lines = sorted(set(expect))
            m.mapping = edit.mapping()
            m.diff = diff_of(path, text, new)
            out.append(m)
        except NotApplicable as s:
            skips[f"n/a {kind}: {s}"] += 1
        except Skip as s:
            skips[f"guard {kind}: {s}"] += 1

    # guards common to every kind that removes or moves a reset
    def removal_guard(o: Optim):
        if info.nested_resets:
            raise Skip("reset-in-nested-loop-or-function")
        if len(o.resets) != 1:
            raise Skip("several-resets")
        if len(o.steps) != 1:
            raise Skip("several-steps")
        if built_in_loop(loop, o.name):
            raise Skip("optimizer-built-in-loop")
        if is_loop and any(isinstance(s, (ast.Break, ast.Return, ast.Raise)) for s in loop.body):
            raise Skip("loop-runs-once")  # an unconditional break: nothing piles up
        called = info.calls & helper_resets
        if called:
            raise Skip("called-function-resets")

    single = len(opts) == 1

    for o in opts.values():
        try:
            removal_guard(o)
        except Skip as s:
            skips[f"guard (every kind): {s}"] += 1
            continue
        r = o.resets[0]
        step = o.steps[0]
        form = r.form

        def delete(edit: Edit, o=o, r=r, step=step):
            take_out(edit, r.stmt, lines)
            m = edit.mapping()
            return [m[step.stmt.line]]

        def hoist(edit: Edit, o=o, r=r, step=step):
            if reads(r.stmt.node) & info.assigned:
                raise Skip("bound-in-loop")
            if loop.col_offset and lines[loop.lineno - 1][: loop.col_offset].strip():
                raise Skip("shares-line")
            ind = indent_of(lines[loop.lineno - 1])
            moved = moved_text(r.stmt, lines, ind, edit.eol)
            take_out(edit, r.stmt, lines)
            edit.insert_before(loop.lineno, moved)
            m = edit.mapping()
            return [m[step.stmt.line]]

        def before_step(edit: Edit, o=o, r=r, step=step):
            first_bw = min(b.line for b in info.backwards)
            if first_bw < r.stmt.line < step.stmt.line:
                raise NotApplicable("reset-already-between")
            if step.stmt.line <= first_bw:
                raise NotApplicable("step-before-backward")
            own_lines(step.stmt, lines)
            ind = indent_of(lines[step.stmt.line - 1])
            moved = moved_text(r.stmt, lines, ind, edit.eol)
            take_out(edit, r.stmt, lines)
            edit.insert_before(step.stmt.line, moved)
            return edit.marked()

        def in_window(edit: Edit, o=o, r=r, step=step):
            if window_if(step.stmt) is None:
                raise NotApplicable("no-accumulation")
            if window_if(r.stmt) is None:
                raise NotApplicable("reset-not-in-window")
            win = window_if(step.stmt)
            inside = {id(n) for n in ast.walk(win)}
            if any(id(b.node) in inside for b in info.backwards):
                raise Skip("backward-in-window")  # not accumulation: a pass only when it steps
            if reads(r.stmt.node) & info.assigned:
                raise Skip("bound-in-loop")
            first = loop.body[0]
            if first.lineno == loop.lineno:
                raise Skip("shares-line")
            if first is r.stmt.node:
                raise NotApplicable("reset-already-first")
            ind = indent_of(lines[first.lineno - 1])
            moved = moved_text(r.stmt, lines, ind, edit.eol)
            take_out(edit, r.stmt, lines)
            edit.insert_before(first.lineno, moved)
            return edit.marked()

        def skip_after(edit: Edit, o=o, r=r, step=step):
            if not re.search(r"^\s*(import torch\b|from torch\b)", text, re.M):
                raise Skip("no-torch-import")
            bws = [(b, c) for b, c in zip(info.backwards, info.backward_calls) if b.line < step.stmt.line]
            if len(bws) != 1:
                raise Skip("several-backwards")
            b, call = bws[0]
            if not (r.stmt.line > step.stmt.line):
                raise NotApplicable("reset-not-after-step")
            f = call.func
            if call.args or call.keywords:
                if src(f.value).lower().endswith("accelerator") and len(call.args) == 1:
                    loss = call.args[0]
                else:
                    raise Skip("backward-with-arguments")
            elif isinstance(f.value, ast.Call) and len(f.value.args) == 1 and isinstance(f.value.func, ast.Attribute) and f.value.func.attr == "scale":
                loss = f.value.args[0]
            else:
                loss = f.value
            if not isinstance(loss, (ast.Name, ast.Attribute, ast.Subscript)):
                raise Skip("loss-not-a-name")
            own_lines(b, lines)
            if b.node.end_lineno and b.node.end_lineno >= step.stmt.line:
                raise Skip("shares-line")
            ind = indent_of(lines[b.line - 1])
            unit = "    " if "\t" not in ind else "\t"
            edit.insert_after(
                b.end,
                [f"{ind}if not torch.isfinite({src(loss)}):{edit.eol}", f"{ind}{unit}continue{edit.eol}"],
            )
            m = edit.mapping()
            return [m[step.stmt.line]] + edit.marked()

        if single and not is_loop:
            # a per-batch function: no loop to hoist out of, no window, and a
            # skip would be a `return`
            attempt("delete-reset", form, o.name, delete)
            attempt("reset-before-step", form, o.name, before_step)
        elif single:
            attempt("delete-reset", form, o.name, delete)
            attempt("hoist-reset", form, o.name, hoist)
            attempt("reset-before-step", form, o.name, before_step)
            attempt("reset-in-window", form, o.name, in_window)
            attempt("skip-after-backward", form, o.name, skip_after)
        else:
            attempt("one-of-several", form, o.name, delete)
    return out


# --------------------------------------------------------------------------
# per repository


@dataclass
class LoopRecord:
    repo: str
    path: str
    line: int
    end: int
    opts: list
    forms: list
    flagged_high: list  # original findings in the loop (default tier)
    flagged_all: list  # original findings in the loop (all tiers)
    mutated: bool = False
    unit: str = "loop"  # loop | function


# Method names too common to tell a call of the tree's function from another
# object's (`model.train()` is nn.Module's).
AMBIGUOUS = {"train", "eval", "forward", "__call__", "step", "update", "__init__", "run", "fit", "backward"}


def called_in_loops(trees: dict[str, ast.AST]) -> tuple[set[str], set[str]]:
    """Names called inside a for/while body of the tree; and those of them
    called in a loop that resets gradients itself (the callee's reset is then
    not the only one)."""
    called, by_resetting = set(), set()
    for tree in trees.values():
        for n in ast.walk(tree):
            if not isinstance(n, LOOPS):
                continue
            names = set()
            for c in ast.walk(n):
                if isinstance(c, ast.Call):
                    if isinstance(c.func, ast.Name):
                        names.add(c.func.id)
                    elif isinstance(c.func, ast.Attribute):
                        names.add(c.func.attr)
            called |= names
            if mentions_reset(n):
                by_resetting |= names
    return called, by_resetting


def helper_reset_names(trees: dict[str, ast.AST]) -> set[str]:
    """Names of the tree's functions and methods that reset gradients on every
    call: a reset in their own body, not inside a loop of theirs (a function
    whose reset lies in its own training loop is a driver, not a helper)."""
    names = set()
    for tree in trees.values():
        for n in ast.walk(tree):
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            stack = list(n.body)
            while stack:
                s = stack.pop()
                if isinstance(s, LOOPS + DEFS):
                    continue
                if mentions_reset_here(s):
                    names.add(n.name)
                    break
                for field_ in ("body", "orelse", "finalbody", "handlers", "cases"):
                    stack.extend(getattr(s, field_, []) or [])
    names.discard("zero_grad")  # the reset calls themselves
    return names


def mentions_reset_here(s: ast.AST) -> bool:
    """A reset in a statement's own expressions (not its nested blocks)."""
    if isinstance(s, (ast.If, ast.While)):
        exprs = [s.test]
    elif isinstance(s, (ast.With, ast.AsyncWith)):
        exprs = [i.context_expr for i in s.items]
    elif isinstance(s, (ast.Try, ast.ExceptHandler)) or type(s).__name__ in ("TryStar", "match_case"):
        exprs = []
    elif isinstance(s, ast.Match):
        exprs = [s.subject]
    else:
        exprs = [s]
    return any(mentions_reset(e) for e in exprs)


def process_repo(job: dict) -> dict:
    repo, commit, gitdir = job["repo"], job["commit"], job["gitdir"]
    lint = Lint(job["gradlint"], job["confidence_all"], job["threads"], job["timeout"])
    root = Path(job["work"]) / repo.replace("/", "+")
    res = {
        "repo": repo,
        "commit": commit,
        "error": "",
        "loops": [],
        "mutants": [],
        "skips": Counter(),
        "not_pattern": Counter(),
        "files": 0,
        "not_linted_files": 0,
        "timing": {},
    }
    t_start = time.monotonic()
    try:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        t0 = time.monotonic()
        try:
            res["files"] = export(gitdir, commit, root)
        except Exception as e:  # noqa: BLE001
            res["error"] = f"export: {e}"
            return res
        res["timing"]["export_s"] = time.monotonic() - t0
        # the candidate files
        t0 = time.monotonic()
        texts: dict[str, str] = {}
        trees: dict[str, ast.AST] = {}
        for p in sorted(root.rglob("*.py")):
            if not p.is_file() or p.stat().st_size > MAX_FILE_BYTES:
                continue
            rel = p.relative_to(root).as_posix()
            try:
                t = p.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue
            if "zero_grad" not in t and ".grad" not in t:
                continue
            try:
                tree = ast.parse(t, filename=rel)
            except (SyntaxError, ValueError, RecursionError):
                continue
            texts[rel] = t
            trees[rel] = tree
        skipped = not_linted(root, sorted(trees))
        res["not_linted_files"] = len(skipped)
        for rel in skipped:
            trees.pop(rel)
        helpers = helper_reset_names(trees)
        candidates = []  # (rel, info, opts, unit)
        in_loops, in_resetting_loops = called_in_loops(trees) if job["functions"] else (set(), set())
        for rel, tree in trees.items():
            if "backward" not in texts[rel]:
                continue
            for n in ast.walk(tree):
                if isinstance(n, LOOPS):
                    info = scan_loop(n)
                    if not info.backwards and not info.steps:
                        continue
                    opts, why = loop_pattern(info)
                    if opts is None:
                        res["not_pattern"][why] += 1
                        continue
                    candidates.append((rel, info, opts, "loop"))
                elif job["functions"] and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    # a per-batch function: backward, step and reset in its own
                    # body (not in a loop of its own), called in a loop of the tree
                    info = scan_loop(n)
                    if not info.backwards or not info.steps:
                        continue
                    opts, why = loop_pattern(info)
                    if opts is None:
                        continue
                    if n.name in AMBIGUOUS or n.name not in in_loops:
                        res["not_pattern"]["function: not called in a loop (or a common name)"] += 1
                        continue
                    if n.name in in_resetting_loops:
                        res["not_pattern"]["function: its calling loop resets too"] += 1
                        continue
                    candidates.append((rel, info, opts, "function"))
        res["timing"]["analyse_s"] = time.monotonic() - t0
        if not candidates:
            return res
        orig, dt, err = lint.run(root)
        res["timing"]["lint_original_s"] = dt
        if err:
            res["error"] = f"lint original: {err}"
            return res
        orig_by_file = defaultdict(list)
        for f in orig:
            orig_by_file[f.path].append(f)
        clean = []
        for rel, info, opts, unit in candidates:
            lo, hi = info.node.lineno, info.node.end_lineno or info.node.lineno
            inside = [f for f in orig_by_file.get(rel, []) if f.cell is None and lo <= f.line <= hi]
            rec = LoopRecord(
                repo, rel, lo, hi,
                sorted(opts),
                sorted({r.form for o in opts.values() for r in o.resets}),
                [f"{f.line} {f.code}" for f in inside if f.confidence == "high"],
                [f"{f.line} {f.code} {f.confidence}" for f in inside],
                unit=unit,
            )
            res["loops"].append(rec)
            if not inside:
                clean.append((rec, rel, info, opts, unit))
        # a fair share per repository
        rng = random.Random(f"{job['seed']}:{repo}")
        if job["max_loops"]:
            capped = []
            for unit in ("loop", "function"):
                these = [c for c in clean if c[4] == unit]
                if len(these) > job["max_loops"]:
                    these = rng.sample(these, job["max_loops"])
                capped += these
            clean = sorted(capped, key=lambda c: (c[1], c[0].line))
        mutants = []
        for rec, rel, info, opts, unit in clean:
            rec.mutated = True
            ms = make_mutants(repo, rel, texts[rel], info, opts, helpers, res["skips"], unit)
            mutants.extend(ms)
        # lint each mutant: the file rewritten, the whole tree, the file restored
        lint_times = []
        for m in mutants:
            target = root / m.path
            original_bytes = target.read_bytes()
            try:
                target.write_bytes(m.text.encode("utf-8"))
                found, dt, err = lint.run(root)
            finally:
                target.write_bytes(original_bytes)
            lint_times.append(dt)
            if err:
                m.lint_error = err
                continue
            before = {
                (f.code, m.mapping.get(f.line, -1))
                for f in orig_by_file.get(m.path, [])
                if f.cell is None
            }
            new = [
                f for f in found
                if f.path == m.path and f.cell is None and (f.code, f.line) not in before
            ]
            m.new_findings = [f"{f.line} {f.code} {f.confidence}" for f in new]
            orig_keys = {f.key() for f in orig}
            moved = [
                f for f in found
                if f.path != m.path and f.key() not in orig_keys
                and f.code in ACCEPT[m.kind] and f"{m.path}:" in norm_help(f.help)
            ]
            m.elsewhere_findings = [f"{f.path}:{f.line} {f.code} {f.confidence}" for f in moved]
            for tier, accepted in TIERS.items():
                m.elsewhere[tier] = any(f.confidence in accepted for f in moved)
            for tier, accepted in TIERS.items():
                m.detected[tier] = any(
                    f.code in ACCEPT[m.kind]
                    and f.confidence in accepted
                    and any(abs(f.line - e) <= SLACK for e in m.expect_lines)
                    for f in new
                )
        res["timing"]["lint_mutants_s"] = sum(lint_times)
        res["timing"]["mutants_linted"] = len(lint_times)
        for m in mutants:
            m.text = ""
            m.mapping = {}
        res["mutants"] = mutants
        return res
    except Exception as e:  # noqa: BLE001
        import traceback

        res["error"] = f"harness: {e!r} {traceback.format_exc()[-600:]}"
        return res
    finally:
        res["timing"]["total_s"] = time.monotonic() - t_start
        if not job["keep"]:
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------
# report


def rate(n: int, d: int) -> str:
    return f"{n}/{d} = {n / d:.3f}" if d else "0/0"


def read_repos(files: list[str], mirrors: str | None = None) -> list[tuple[str, str, str]]:
    """Repositories from TSV files, or from a manifest (``wild.toml``: its
    ``[[repo]]`` entries) whose git copies are found under ``mirrors``."""
    seen = {}
    for f in files:
        if f.endswith(".toml"):
            import tomllib

            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import evaluate

            for r in tomllib.loads(Path(f).read_text()).get("repo", []):
                gd = evaluate.git_dir(Path(mirrors), r["repo"]) if mirrors else None
                if gd is not None and (gd / ".git").is_dir():
                    gd = gd / ".git"  # a copy with a work tree
                if gd is not None and r["repo"] not in seen:
                    seen[r["repo"]] = (r["repo"], r["commit"], str(gd))
            continue
        for line in Path(f).read_text().splitlines():
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or not parts[0].strip() or parts[0].startswith("#"):
                continue
            repo, commit, gitdir = (p.strip() for p in parts[:3])
            if repo not in seen:
                seen[repo] = (repo, commit, gitdir)
    return list(seen.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--repos",
        nargs="+",
        required=True,
        help="TSV files (OWNER/NAME, COMMIT, GITDIR) or a manifest such as lint/corpus/wild.toml",
    )
    ap.add_argument("--mirrors", help="with a manifest: the folder of git copies (as for evaluate.py)")
    ap.add_argument("--gradlint", required=True, help="the gradlint binary")
    ap.add_argument("--work", required=True, help="scratch folder")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sample", type=int, default=0, help="print this many random mutants as diffs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--max-loops-per-repo", type=int, default=20,
                    help="mutate at most this many loops of one repository (seed-fixed sample; 0: all)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N repositories (0: all)")
    ap.add_argument("--functions", action="store_true",
                    help="also mutate per-batch functions (backward, step and reset in a function's own "
                         "body, the function called in a loop of the tree): reported apart from loops")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per gradlint run")
    ap.add_argument("--keep", action="store_true", help="keep the exported trees")
    args = ap.parse_args()

    binary = str(Path(args.gradlint).resolve())
    confidence_all = probe_confidence(binary)
    repos = read_repos(args.repos, args.mirrors)
    if args.limit:
        repos = repos[: args.limit]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    jobs = [
        {
            "repo": r, "commit": c, "gitdir": g, "gradlint": binary,
            "confidence_all": confidence_all, "threads": threads, "timeout": args.timeout,
            "work": str(work), "seed": args.seed, "max_loops": args.max_loops_per_repo,
            "keep": args.keep, "functions": args.functions,
        }
        for r, c, g in repos
    ]
    print(f"gradlint: {binary} (--confidence all: {'yes' if confidence_all else 'not supported, default output only'})")
    print(f"repositories listed: {len(jobs)}; jobs: {args.jobs}", flush=True)
    t0 = time.monotonic()
    results = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futs = [pool.submit(process_repo, j) for j in jobs]
        for i, fut in enumerate(as_completed(futs), 1):
            r = fut.result()
            results.append(r)
            if i % 25 == 0 or i == len(futs):
                print(f"  {i}/{len(futs)} repositories, {time.monotonic() - t0:.0f}s", flush=True)
    wall = time.monotonic() - t0
    results.sort(key=lambda r: r["repo"])
    summary = report(results, args, wall, confidence_all)
    if args.json:
        out = {
            "command": " ".join(sys.argv),
            "gradlint": binary,
            "confidence_all": confidence_all,
            "summary": summary,
            "repos": [
                {
                    "repo": r["repo"], "commit": r["commit"], "error": r["error"],
                    "files": r["files"], "timing": r["timing"],
                    "skips": dict(r["skips"]), "not_pattern": dict(r["not_pattern"]),
                }
                for r in results
            ],
            "loops": [asdict(l) for r in results for l in r["loops"]],
            "mutants": [
                {k: v for k, v in asdict(m).items() if k not in ("text", "mapping")}
                for r in results for m in r["mutants"]
            ],
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"\nwrote {args.json}")
    return 0


def report(results: list[dict], args, wall: float, confidence_all: bool) -> dict:
    errors = [r for r in results if r["error"]]
    units = [l for r in results for l in r["loops"]]
    all_mutants = [m for r in results for m in r["mutants"]]
    summary = {
        "repos_listed": len(results),
        "repos_errors": len(errors),
        "tiers": "high, medium, low" if confidence_all else "default output only (no --confidence)",
    }

    print()
    print("== repositories")
    print(f"listed {len(results)}, errors {len(errors)}, "
          f"with a loop of the pattern {len({l.repo for l in units if l.unit == 'loop'})}, "
          f"with a mutant (loops or functions) {len({m.repo for m in all_mutants})}")
    for r in errors[:20]:
        print(f"  error {r['repo']}: {r['error'][:200]}")
    np = Counter()
    for r in results:
        np.update(r["not_pattern"])
    print("loops/functions with backward or a step but not the pattern: "
          + ", ".join(f"{k} {v}" for k, v in np.most_common()))

    for unit in ("loop", "function"):
        loops = [l for l in units if l.unit == unit]
        if not loops:
            continue
        mutants = [m for m in all_mutants if m.unit == unit]
        summary[unit] = report_unit(unit, loops, mutants)

    print()
    print("== skipped mutants per guard (n/a: the loop lacks what the kind needs)")
    skips = Counter()
    for r in results:
        skips.update(r["skips"])
    for k, v in sorted(skips.items()):
        print(f"  {k:<60}{v:>6}")
    lint_errors = [m for m in all_mutants if m.lint_error]
    if lint_errors:
        print(f"  (lint failed on {len(lint_errors)} mutants: {lint_errors[0].lint_error[:100]})")
    summary["skips"] = dict(skips)

    print()
    print("== timing")
    t = Counter()
    for r in results:
        for k, v in r["timing"].items():
            t[k] += v
    n_lints = t["mutants_linted"]
    print(f"wall {wall:.0f}s with --jobs {args.jobs}; summed over repositories: export {t['export_s']:.0f}s, "
          f"analysis {t['analyse_s']:.0f}s, original lints {t['lint_original_s']:.0f}s, "
          f"mutant lints {t['lint_mutants_s']:.0f}s ({int(n_lints)} runs, "
          f"{(t['lint_mutants_s'] / n_lints if n_lints else 0):.2f}s each)")
    slow = sorted(results, key=lambda r: -r["timing"].get("total_s", 0))[:5]
    print("slowest: " + ", ".join(f"{r['repo']} {r['timing'].get('total_s', 0):.0f}s" for r in slow))
    summary["wall_s"] = wall
    summary["timing"] = dict(t)

    linted = [m for m in all_mutants if not m.lint_error]
    if args.sample and linted:
        rng = random.Random(args.seed)
        pick = rng.sample(linted, min(args.sample, len(linted)))
        print()
        print(f"== {len(pick)} random mutants (seed {args.seed})")
        for i, m in enumerate(pick, 1):
            verdict = "DETECTED (high)" if m.detected.get("high") else (
                "DETECTED (lower tier)" if m.detected.get("all") else (
                    "MISSED here, reported in a callee's file" if m.elsewhere.get("all") else "MISSED"))
            print()
            print(f"--- [{i}] {m.kind} ({m.form} reset of `{m.opt}`) in {m.repo} {m.path}, {m.unit} at line {m.loop_line}")
            print(f"    expected {'|'.join(sorted(ACCEPT[m.kind]))} at line {', '.join(map(str, m.expect_lines))}; "
                  f"gradlint: {verdict}; new findings: {', '.join(m.new_findings + m.elsewhere_findings) or 'none'}")
            print(m.diff.rstrip("\n"))
    return summary


def report_unit(unit: str, loops: list, mutants: list) -> dict:
    """Loops (or per-batch functions): counts, false positives, recall."""
    linted = [m for m in mutants if not m.lint_error]
    mutated = [l for l in loops if l.mutated]
    what = "loops" if unit == "loop" else "per-batch functions (called in a loop of the tree)"
    print()
    print(f"== {what}")
    print(f"with the pattern: {len(loops)} in {len({l.repo for l in loops})} repositories; "
          f"clean on the original and mutated: {len(mutated)}; "
          f"mutants: {len(mutants)} in {len({m.repo for m in mutants})} repositories")

    fp_high = [l for l in loops if l.flagged_high]
    fp_all = [l for l in loops if l.flagged_all]
    print()
    print(f"false positives on the originals ({what} with the pattern that gradlint flags inside):")
    print(f"  default tier (high): {rate(len(fp_high), len(loops))}")
    print(f"  all tiers:           {rate(len(fp_all), len(loops))}")
    for l in fp_all[:60]:
        print(f"    {l.repo} {l.path}:{l.line}-{l.end}: {', '.join(l.flagged_all)}")

    print()
    print(f"recall per kind ({what}):")
    header = (f"  {'kind':<22}{'mutants':>8}{'linted':>8}{'high (default)':>22}{'all tiers':>22}"
              f"{'+ callee file':>15}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    kinds = {}
    for kind in KINDS:
        ms = [m for m in linted if m.kind == kind]
        n_all = sum(1 for m in mutants if m.kind == kind)
        if not n_all:
            continue
        hi = sum(1 for m in ms if m.detected.get("high"))
        al = sum(1 for m in ms if m.detected.get("all"))
        el = sum(1 for m in ms if not m.detected.get("all") and m.elsewhere.get("all"))
        kinds[kind] = {"mutants": n_all, "linted": len(ms), "detected_high": hi, "detected_all": al,
                       "elsewhere_only_all": el}
        print(f"  {kind:<22}{n_all:>8}{len(ms):>8}{rate(hi, len(ms)):>22}{rate(al, len(ms)):>22}{'+' + str(el):>15}")
    hi = sum(1 for m in linted if m.detected.get("high"))
    al = sum(1 for m in linted if m.detected.get("all"))
    el = sum(1 for m in linted if not m.detected.get("all") and m.elsewhere.get("all"))
    print(f"  {'all':<22}{len(mutants):>8}{len(linted):>8}{rate(hi, len(linted)):>22}{rate(al, len(linted)):>22}{'+' + str(el):>15}")
    print("  (+ callee file: misses in the mutated file whose finding gradlint reports at the step of a")
    print("   class the loop calls, in another file, its help naming the mutated file as the loop's)")
    print("  by the reset's form (all kinds, all tiers): " + ", ".join(
        f"{form} {rate(sum(1 for m in linted if m.form == form and m.detected.get('all')), sum(1 for m in linted if m.form == form))}"
        for form in sorted({m.form for m in linted})))
    missed = [m for m in linted if not m.detected.get("all")]
    near = Counter(
        "reported in a callee's file" if m.elsewhere.get("all")
        else "another new finding in the file" if m.new_findings
        else "no new finding" for m in missed)
    print("  misses (all tiers): " + (", ".join(f"{k}: {v}" for k, v in near.items()) or "none"))
    for m in missed[:150]:
        print(f"    MISS {m.kind:<20} {m.repo} {m.path}:{','.join(map(str, m.expect_lines))} "
              f"({m.form} reset of `{m.opt}`, {unit} at {m.loop_line}); "
              f"new: {', '.join(m.new_findings + m.elsewhere_findings) or 'none'}")
    return {
        "units": len(loops),
        "repos": len({l.repo for l in loops}),
        "mutated": len(mutated),
        "mutants": len(mutants),
        "repos_with_mutants": len({m.repo for m in mutants}),
        "fp_high": len(fp_high),
        "fp_all": len(fp_all),
        "kinds": kinds,
        "detected_high": hi,
        "detected_all": al,
        "elsewhere_only_all": el,
        "linted": len(linted),
    }


if __name__ == "__main__":
    sys.exit(main())
