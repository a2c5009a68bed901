#!/usr/bin/env bash
# gradlint on correct training code nobody here wrote (see scripts/corpus.sh):
# every finding must be one reviewed in lint/tests/corpus-expected.txt, and
# every reviewed one must still be found.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/corpus.sh
gradlint=${GRADLINT:-target/release/gradlint}
[ -x "$gradlint" ] || cargo build --release -p gradlint
set +e
"$gradlint" --format json .cache/corpus/src > .cache/corpus-report.json
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
