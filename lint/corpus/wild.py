#!/usr/bin/env python3
"""gradlint over whole public repositories, as a user runs it (`gradlint .`).

``wild.toml`` pins the repositories (``[[repo]]``: ``repo``, ``commit``),
chosen for having PyTorch training code, not for bugs, and records a verdict
on every finding gradlint reported in them (``[[finding]]``: ``repo``,
``path``, ``line``, ``code``, ``verdict`` = "right" or "wrong", ``reason``),
read from the code. Only pointers and verdicts are kept here, never the code:
a repository is linted when a git copy of it is present under ``--mirrors``
(as for ``evaluate.py``) and skipped otherwise.

Prints, per confidence tier, the findings per 100 repositories and, for the
findings with a verdict, the share right; then every finding with no verdict
yet (to review) and every verdict whose finding is gone.

Usage: python3 lint/corpus/wild.py --mirrors DIR [--gradlint BIN] [--json OUT]
Exit status: 0; 1 when --max-wrong-per-100 is exceeded at the default tier
or a default-tier finding has no verdict; 2 on a usage or manifest error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("error: lint/corpus/wild.py needs Python 3.11 or later (tomllib)")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import evaluate  # noqa: E402  (the same tree export and mirror lookup)

TIERS = ("high", "medium", "low")


def lint_tree(gradlint: str, root: Path) -> list[dict]:
    """Every finding of every tier in a tree, paths relative to it."""
    done = subprocess.run(
        [gradlint, "--format", "json", "--confidence", "all", "."],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 1, 2):
        raise evaluate.CorpusError(f"gradlint failed on {root} (exit {done.returncode}): {done.stderr[-800:]}")
    report = json.loads(done.stdout)
    out = []
    for d in report["diagnostics"]:
        out.append(
            {
                "path": os.path.normpath(d["path"]),
                "line": d["line"] if d.get("cell") is None else f"cell {d['cell']}:{d['line']}",
                "code": d["code"],
                "confidence": d.get("confidence", "high"),
                "message": d["message"],
                "assumptions": [a["note"] for a in d.get("assumptions", [])],
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=HERE / "wild.toml")
    ap.add_argument("--mirrors", type=Path, required=True)
    ap.add_argument("--gradlint", default=str(evaluate.ROOT / "target/release/gradlint"))
    ap.add_argument("--cache", type=Path, default=evaluate.ROOT / ".cache/corpus-eval")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write every finding here")
    ap.add_argument("--max-wrong-per-100", type=float, default=None)
    args = ap.parse_args()
    gradlint = str(Path(args.gradlint).resolve()) if os.sep in args.gradlint else args.gradlint

    try:
        data = tomllib.loads(args.manifest.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        print(f"error: {args.manifest}: {e}", file=sys.stderr)
        return 2
    repos = [(r["repo"], r["commit"]) for r in data.get("repo", [])]
    verdicts = {}
    for f in data.get("finding", []):
        if f.get("verdict") not in ("right", "wrong"):
            print(f"error: {args.manifest}: finding {f} needs verdict right or wrong", file=sys.stderr)
            return 2
        verdicts[(f["repo"], f["path"], str(f["line"]), f["code"])] = f

    def one(item: tuple[str, str]) -> tuple[str, list[dict] | None, str]:
        repo, commit = item
        root, why = evaluate.checkout(repo, commit, args.mirrors, args.cache)
        if root is None:
            return repo, None, why
        return repo, lint_tree(gradlint, root), ""

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, repos))
    linted = [(r, f) for r, f, _ in results if f is not None]
    skipped = [(r, why) for r, f, why in results if f is None]
    n = len(linted)
    findings = [dict(f, repo=r) for r, fs in linted for f in fs]
    print(f"repositories: {len(repos)} pinned, {n} linted, {len(skipped)} skipped")
    for r, why in skipped:
        print(f"  skipped {r}: {why}")
    if n == 0:
        return 2
    tiers = Counter(f["confidence"] for f in findings)
    print("findings per tier (per 100 repositories):")
    for t in TIERS:
        print(f"  {t:<6} {tiers[t]:4d}  ({100 * tiers[t] / n:.1f})")

    def verdict(f: dict) -> dict | None:
        return verdicts.get((f["repo"], f["path"], str(f["line"]), f["code"]))

    unreviewed_default = 0
    for label, shown in (("default (high)", ("high",)), ("all tiers", TIERS)):
        chosen = [f for f in findings if f["confidence"] in shown]
        right = sum(1 for f in chosen if (v := verdict(f)) and v["verdict"] == "right")
        wrong = sum(1 for f in chosen if (v := verdict(f)) and v["verdict"] == "wrong")
        open_ = len(chosen) - right - wrong
        if shown == ("high",):
            unreviewed_default = open_
            wrong_default = wrong
        share = f"{right / (right + wrong):.3f}" if right + wrong else "-"
        print(
            f"{label}: {len(chosen)} findings ({100 * len(chosen) / n:.1f} per 100 repositories); "
            f"reviewed {right + wrong}: {right} right, {wrong} wrong (share right {share}, "
            f"{100 * wrong / n:.2f} wrong per 100 repositories); {open_} not reviewed"
        )
    print("\nfindings (tier, verdict):")
    for f in sorted(findings, key=lambda f: (TIERS.index(f["confidence"]), f["repo"], f["path"], str(f["line"]))):
        v = verdict(f)
        mark = v["verdict"] if v else "NOT REVIEWED"
        print(f"  [{f['confidence']}] {mark:<12} {f['repo']} {f['path']}:{f['line']} {f['code']} {f['message'][:90]}")
        for a in f["assumptions"]:
            print(f"        assuming: {a}")
    present = {(f["repo"], f["path"], str(f["line"]), f["code"]) for f in findings}
    gone = [k for k in verdicts if k not in present and k[0] in {r for r, _ in linted}]
    if gone:
        print("\nverdicts whose finding is gone:")
        for k in gone:
            print(f"  {verdicts[k]['verdict']:<6} {k[0]} {k[1]}:{k[2]} {k[3]}")
    if args.json:
        args.json.write_text(json.dumps(findings, indent=1))
    if unreviewed_default:
        return 1
    if args.max_wrong_per_100 is not None and 100 * wrong_default / n > args.max_wrong_per_100:
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except evaluate.CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
