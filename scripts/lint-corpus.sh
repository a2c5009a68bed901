#!/usr/bin/env bash
# gradlint on real training code nobody here wrote, with a binary built from
# the current source (cargo is incremental: quick when nothing changed).
#  1. The big corpus of scripts/corpus.sh: every finding of every confidence
#     must be one reviewed in lint/tests/corpus-expected.txt, and every
#     reviewed one still found.
#  2. The labelled PyPI corpus (lint/corpus/pypi.toml, downloads cached under
#     .cache/corpus-eval): precision of the default output (high confidence)
#     and recall of every tier together, every false positive and miss
#     printed; fails below the floors (precision 0.98, recall 0.90).
set -euo pipefail
cd "$(dirname "$0")/.."
min_precision=${CORPUS_MIN_PRECISION:-0.98}
min_recall=${CORPUS_MIN_RECALL:-0.90}

bash scripts/corpus.sh
cargo build --release -p gradlint --quiet
gradlint="${CARGO_TARGET_DIR:-target}/release/gradlint"
set +e
"$gradlint" --format json --confidence all .cache/corpus/src > .cache/corpus-report.json
status=$?
set -e
if [ $status -ge 2 ]; then
  echo "error: gradlint could not lint the corpus (exit $status)" >&2
  python3 -c 'import json,sys; [print(e) for e in json.load(open(sys.argv[1]))["errors"]]' .cache/corpus-report.json >&2
  exit 1
fi
python3 - <<'PY'
import json, sys
report = json.load(open(".cache/corpus-report.json"))
found = sorted(f'{d["path"].replace(".cache/corpus/src/", "")}:{d["line"]} {d["code"]}' for d in report["diagnostics"])
expected = sorted(l.split("#")[0].strip() for l in open("lint/tests/corpus-expected.txt") if l.split("#")[0].strip())
print(f'gradlint: {report["files"]} files, {len(found)} findings, {len(expected)} reviewed')
if found != expected:
    print("unexpected:", sorted(set(found) - set(expected)))
    print("no longer found:", sorted(set(expected) - set(found)))
    sys.exit(1)
PY
# The default output (high confidence) must be precise; every tier together
# must find the labelled bugs.
python3 lint/corpus/evaluate.py lint/corpus/pypi.toml --gradlint "$gradlint" \
  --min-precision "$min_precision"
python3 lint/corpus/evaluate.py lint/corpus/pypi.toml --gradlint "$gradlint" --quiet \
  --confidence all --min-recall "$min_recall"
