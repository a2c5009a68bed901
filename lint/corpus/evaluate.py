#!/usr/bin/env python3
"""Precision and recall of gradlint on the labelled corpus of real training code.

The manifests next to this script (``*.toml``) label files of real code:

* ``pypi.toml``: files of PyPI releases at pinned versions, including bug/fix
  pairs (an older release with a gradient-reset bug and the release that fixed
  it). The releases are downloaded once (``pip download --no-deps``) into the
  cache; CI runs this part (``scripts/lint-corpus.sh``).
* ``repos.toml``: files of public research repositories at pinned commits.
  Only pointers are kept here, never the code: a repository is linted when a
  git copy of it is present under ``--mirrors`` (``OWNER+NAME/repo``,
  ``OWNER+NAME`` or ``OWNER/NAME``, bare or not) and skipped otherwise.
* ``heldout*.toml``: held-out sets in the same form, each labelled blind;
  precision and recall are printed per manifest as well as in all.

An expected position may list alternatives (``"323|326 GL001"``): one bug
with several step calls in branches, matched by one finding at any of them.
A labelled file gradlint cannot parse (Python 2) is listed as not analysed
and not counted.

Each labelled file lists the findings gradlint should report (``"LINE CODE"``,
or ``"cell N:LINE CODE"`` in a notebook) or none (clean), and a reason. Each
package or repository tree is linted as a whole (one gradlint invocation), so
findings that depend on other files of the tree count; findings in files that
are not labelled are listed but not counted.

Prints precision, recall and every false positive and miss. Exit status: 0,
1 when ``--min-precision``/``--min-recall`` are not met, 2 on a usage,
download or manifest error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("error: lint/corpus/evaluate.py needs Python 3.11 or later (tomllib)")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class CorpusError(Exception):
    """A manifest, download or lint failure: reported, exit status 2."""


@dataclass
class Labelled:
    """One labelled file."""

    source: str  # "pypi" or "repos"
    tree: str  # package spec or "owner/name@commit"
    path: str
    expect: set[tuple[str, str]]  # (position, code); position "LINE" or "cell N:LINE"
    reason: str
    bug: bool
    part: str  # the manifest's name: its part of the corpus


@dataclass
class Tree:
    """A package release or a repository at a commit, linted as a whole."""

    key: str
    root: Path | None = None  # None: not present, skipped
    why_skipped: str = ""
    files: list[Labelled] = field(default_factory=list)


def parse_expect(entry: dict, where: str) -> set[tuple[str, str]]:
    found = set()
    for item in entry.get("expect", []):
        pos, _, code = item.rpartition(" ")
        if not pos or not code.startswith("GL"):
            raise CorpusError(f"{where}: bad expected finding {item!r} (want 'LINE CODE')")
        found.add((pos.strip(), code))
    return found


def load_manifest(path: Path) -> tuple[str, list[dict], list[Labelled]]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CorpusError(f"{path}: {e}") from e
    source = data.get("source")
    if source not in ("pypi", "repos"):
        raise CorpusError(f"{path}: `source` must be \"pypi\" or \"repos\"")
    labelled = []
    for i, f in enumerate(data.get("file", [])):
        where = f"{path.name}: file #{i + 1}"
        for key in ("path", "reason", "label"):
            if key not in f:
                raise CorpusError(f"{where}: missing `{key}`")
        if f["label"] not in ("clean", "bug"):
            raise CorpusError(f"{where}: `label` must be \"clean\" or \"bug\"")
        expect = parse_expect(f, where)
        if (f["label"] == "bug") != bool(expect):
            raise CorpusError(f"{where}: a bug lists its expected findings, a clean file none")
        if source == "pypi":
            tree = f.get("package", "")
            if "==" not in tree:
                raise CorpusError(f"{where}: `package` must be NAME==VERSION")
        else:
            if "repo" not in f or "commit" not in f:
                raise CorpusError(f"{where}: missing `repo` or `commit`")
            tree = f"{f['repo']}@{f['commit']}"
        labelled.append(
            Labelled(source, tree, f["path"], expect, f["reason"], f["label"] == "bug", path.stem)
        )
    return source, data.get("package", []), labelled


def unpack(archive: Path, into: Path) -> None:
    tmp = into.with_name(into.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
        # An sdist has one top folder: NAME-VERSION/.
        inner = list(tmp.iterdir())
        if len(inner) == 1 and inner[0].is_dir():
            staged = tmp.with_name(tmp.name + "2")
            inner[0].rename(staged)
            tmp.rmdir()
            tmp = staged
    tmp.rename(into)


def fetch_package(spec: str, dist: str, cache: Path) -> Path:
    """Downloads and unpacks one release (once); returns its folder."""
    name, version = spec.split("==", 1)
    into = cache / "pypi" / "src" / f"{name}-{version}"
    if into.is_dir():
        return into
    dl = cache / "pypi" / "dl" / f"{name}-{version}"
    dl.mkdir(parents=True, exist_ok=True)
    if not any(dl.iterdir()):
        binary = ["--only-binary=:all:"] if dist == "wheel" else ["--no-binary=:all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), *binary]
        cmd.append(spec)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(dl, ignore_errors=True)
            raise CorpusError(f"could not download {spec}: {done.stderr.strip()[-500:]}")
    archives = sorted(dl.iterdir())
    if len(archives) != 1:
        raise CorpusError(f"{dl}: expected one archive, found {len(archives)}")
    unpack(archives[0], into)
    return into


def git_dir(mirrors: Path, repo: str) -> Path | None:
    owner, name = repo.split("/", 1)
    for cand in (
        mirrors / f"{owner}+{name}" / "repo",
        mirrors / f"{owner}+{name}",
        mirrors / owner / name,
    ):
        if (cand / "HEAD").is_file() or (cand / ".git").exists():
            return cand
    return None


def export(gd: Path, commit: str, dest: Path) -> None:
    """Writes the Python files and notebooks of `commit` under `dest`.

    Blob by blob: a snapshot may lack its large binary files."""
    git = ["git", "-C", str(gd)]
    listing = subprocess.run(git + ["ls-tree", "-r", "-z", commit], capture_output=True)
    if listing.returncode != 0:
        raise CorpusError(f"git ls-tree failed in {gd}: {listing.stderr.decode(errors='replace').strip()}")
    wanted = []
    for entry in listing.stdout.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        mode, kind, sha = meta.split()
        path = name.decode(errors="replace")
        if kind == b"blob" and mode != b"120000" and path.endswith((".py", ".ipynb")):
            wanted.append((sha.decode(), path))
    batch = subprocess.run(
        git + ["cat-file", "--batch"],
        input="".join(f"{sha}\n" for sha, _ in wanted).encode(),
        capture_output=True,
    )
    out = batch.stdout
    pos = 0
    for sha, path in wanted:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        pos = header_end + 1
        if len(header) < 3 or header[1] != b"blob":
            continue  # missing from the copy
        size = int(header[2])
        target = dest / path
        if ".." in Path(path).parts:
            raise CorpusError(f"{gd}: unsafe path {path!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(out[pos : pos + size])
        pos += size + 1


def checkout(repo: str, commit: str, mirrors: Path | None, cache: Path) -> tuple[Path | None, str]:
    """The repository's Python files and notebooks at `commit`, or why not."""
    if mirrors is None:
        return None, "no --mirrors given"
    gd = git_dir(mirrors, repo)
    if gd is None:
        return None, f"no copy under {mirrors}"
    into = cache / "repos" / repo.replace("/", "+") / commit
    if into.is_dir():
        return into, ""
    git = ["git", "-C", str(gd)]
    if subprocess.run(git + ["cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True).returncode:
        return None, f"commit {commit[:12]} not in the copy at {gd}"
    tmp = into.with_name(into.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        export(gd, commit, tmp)
    except CorpusError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, str(e)
    tmp.rename(into)
    return into, ""


def lint(
    gradlint: str, root: Path, confidence: str = "high"
) -> tuple[dict[str, set[tuple[str, str]]], dict[str, str]]:
    """Findings by path relative to `root` at `confidence` and above, and the
    files gradlint could not lint (a syntax error, e.g. Python 2) with why."""
    done = subprocess.run(
        [gradlint, "--format", "json", "--confidence", confidence, "."],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 1, 2):
        raise CorpusError(f"gradlint failed on {root} (exit {done.returncode}): {done.stderr[-800:]}")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as e:
        raise CorpusError(f"gradlint on {root}: not JSON ({e}): {done.stderr[-800:]}") from e
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for d in report["diagnostics"]:
        path = os.path.normpath(d["path"])
        pos = str(d["line"]) if d.get("cell") is None else f"cell {d['cell']}:{d['line']}"
        found[path].add((pos, d["code"]))
    errors = {os.path.normpath(e["path"]): e.get("message", "error") for e in report.get("errors", [])}
    return found, errors


def match(
    got: set[tuple[str, str]], expect: set[tuple[str, str]]
) -> tuple[int, set[tuple[str, str]], set[tuple[str, str]]]:
    """Expected findings found, findings not expected, expected findings missed.

    An expected position may list alternatives ("323|326"): one finding of that
    code at any of them matches it (one bug, several step calls in branches).
    """
    left = set(got)
    hit = 0
    missed = set()
    for pos, code in expect:
        alternatives = [(alt, code) for alt in pos.split("|")]
        taken = next((a for a in alternatives if a in left), None)
        if taken is None:
            missed.add((pos, code))
        else:
            left.discard(taken)
            hit += 1
    return hit, left, missed


def sort_key(item: tuple[str, str]) -> tuple:
    pos, code = item
    parts = pos.replace("cell ", "").split(":")
    return tuple(int(p) if p.isdigit() else 0 for p in parts), code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifests", nargs="*", type=Path, help="default: every *.toml next to this script")
    ap.add_argument("--gradlint", default=str(ROOT / "target/release/gradlint"))
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache/corpus-eval")
    ap.add_argument(
        "--mirrors",
        type=Path,
        default=Path(os.environ["GRADLINT_CORPUS_MIRRORS"]) if os.environ.get("GRADLINT_CORPUS_MIRRORS") else None,
        help="folder of git copies of the repositories (default: $GRADLINT_CORPUS_MIRRORS)",
    )
    ap.add_argument("--min-precision", type=float, default=None)
    ap.add_argument("--min-recall", type=float, default=None)
    ap.add_argument("--quiet", action="store_true", help="no list of findings in unlabelled files")
    ap.add_argument(
        "--confidence",
        default="high",
        choices=["high", "medium", "low", "all"],
        help="the lowest confidence counted (gradlint's default: high)",
    )
    args = ap.parse_args()

    if os.sep in args.gradlint:
        # Trees are linted from their own folder.
        args.gradlint = os.path.abspath(args.gradlint)
    if shutil.which(args.gradlint) is None:
        print(
            f"error: no gradlint at {args.gradlint}: cargo build --release -p gradlint",
            file=sys.stderr,
        )
        return 2
    manifests = args.manifests or sorted(HERE.glob("*.toml"))
    trees: dict[str, Tree] = {}
    try:
        for m in manifests:
            source, packages, labelled = load_manifest(m)
            dists = {p["name"] + "==" + p["version"]: p.get("dist", "wheel") for p in packages}
            for f in labelled:
                tree = trees.get(f.tree)
                if tree is None:
                    tree = trees[f.tree] = Tree(f.tree)
                    if source == "pypi":
                        if f.tree not in dists:
                            raise CorpusError(f"{m.name}: {f.tree} is not among the [[package]] entries")
                        tree.root = fetch_package(f.tree, dists[f.tree], args.cache)
                    else:
                        repo, commit = f.tree.split("@", 1)
                        tree.root, tree.why_skipped = checkout(repo, commit, args.mirrors, args.cache)
                if any(g.path == f.path for g in tree.files):
                    raise CorpusError(f"{m.name}: {f.tree} {f.path} labelled twice")
                tree.files.append(f)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    tp = fp = fn = 0
    files = bugs = 0
    false_pos: list[str] = []
    misses: list[str] = []
    unlabelled: list[str] = []
    not_analysed: list[str] = []
    skipped: list[str] = []
    by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_part: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for tree in trees.values():
        if tree.root is None:
            skipped.append(f"{tree.key}: {tree.why_skipped} ({len(tree.files)} files)")
            continue
        try:
            found, errors = lint(args.gradlint, tree.root, args.confidence)
        except CorpusError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        labelled_paths = set()
        for f in tree.files:
            path = os.path.normpath(f.path)
            labelled_paths.add(path)
            if not (tree.root / path).is_file():
                print(f"error: {tree.key}: {f.path} does not exist", file=sys.stderr)
                return 2
            if path in errors:
                # Not analysed: neither clean nor a miss.
                not_analysed.append(f"{tree.key} {f.path}: {errors[path]}")
                continue
            got = found.get(path, set())
            files += 1
            bugs += f.bug
            by_source[f.source][0] += 1
            by_source[f.source][1] += f.bug
            hit, extra, missed = match(got, f.expect)
            tp += hit
            part = by_part[f.part]
            part[0] += 1
            part[1] += f.bug
            part[2] += hit
            part[3] += len(extra)
            part[4] += len(missed)
            for pos, code in sorted(extra, key=sort_key):
                fp += 1
                false_pos.append(f"{tree.key} {f.path}:{pos} {code}  [labelled: {f.reason}]")
            for pos, code in sorted(missed, key=sort_key):
                fn += 1
                misses.append(f"{tree.key} {f.path}:{pos} {code}  [{f.reason}]")
        for path, got in sorted(found.items()):
            if path not in labelled_paths:
                for pos, code in sorted(got, key=sort_key):
                    unlabelled.append(f"{tree.key} {path}:{pos} {code}")

    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    print(f"corpus: {files} labelled files ({bugs} with bugs) in {len(trees) - len(skipped)} trees")
    for source, (n, b) in sorted(by_source.items()):
        print(f"  {source}: {n} files, {b} with bugs")
    print("  by manifest: files, with bugs, found, false positives, missed, precision, recall")
    for name, (n, b, hit, extra, missed) in sorted(by_part.items()):
        p = hit / (hit + extra) if hit + extra else 1.0
        r = hit / (hit + missed) if hit + missed else 1.0
        print(f"    {name}: {n}, {b}, {hit}, {extra}, {missed}, {p:.3f}, {r:.3f}")
    for s in skipped:
        print(f"  skipped {s}")
    for s in not_analysed:
        print(f"  not analysed, not counted: {s}")
    print(f"findings: {tp} expected found, {fp} false positives, {fn} missed")
    print(f"precision: {precision:.3f}")
    print(f"recall: {recall:.3f}")
    if false_pos:
        print(f"\nfalse positives ({len(false_pos)}):")
        for line in false_pos:
            print(f"  {line}")
    if misses:
        print(f"\nmissed ({len(misses)}):")
        for line in misses:
            print(f"  {line}")
    if unlabelled and not args.quiet:
        print(f"\nfindings in files not labelled, not counted ({len(unlabelled)}):")
        for line in unlabelled:
            print(f"  {line}")
    failed = []
    if args.min_precision is not None and precision < args.min_precision:
        failed.append(f"precision {precision:.3f} < {args.min_precision}")
    if args.min_recall is not None and recall < args.min_recall:
        failed.append(f"recall {recall:.3f} < {args.min_recall}")
    if failed:
        print("\nbelow the bar: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
