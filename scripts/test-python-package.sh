#!/usr/bin/env bash
# gradlint's Python package, tested the way users get it: builds the wheel
# (maturin, `bindings = "bin"`) and the sdist, installs each into a fresh
# virtual environment, runs the installed `gradlint` (and `python -m gradlint`)
# on a buggy and a clean fixture (exit codes, output, --fix, SARIF), and runs
# the pre-commit hook of this repository with the real pre-commit
# (`pre-commit try-repo`) on a small git repository, buggy then fixed.
#
# maturin and pre-commit come from PyPI, pinned, in a venv under .cache/.
# Every gradlint build here (wheel, sdist install, pre-commit's install)
# shares one cargo target dir: $CARGO_TARGET_DIR, by default target/python.
# Usage: bash scripts/test-python-package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

MATURIN_VERSION=1.16.0
PRE_COMMIT_VERSION=4.7.0
JSONSCHEMA_VERSION=4.23.0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/python}"
# pip's isolated builds (the sdist, pre-commit's install) fetch maturin too:
# the same pinned version.
export PIP_DISABLE_PIP_VERSION_CHECK=1

tools=.cache/python-tools
stamp="$tools/.versions"
want="maturin==$MATURIN_VERSION pre-commit==$PRE_COMMIT_VERSION jsonschema==$JSONSCHEMA_VERSION"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  # shellcheck disable=SC2086
  "$tools/bin/pip" install -q $want
  echo "$want" > "$stamp"
fi
maturin="$root/$tools/bin/maturin"
pre_commit="$root/$tools/bin/pre-commit"
tools_python="$root/$tools/bin/python"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
constraints="$work/constraints.txt"
echo "maturin==$MATURIN_VERSION" > "$constraints"
export PIP_CONSTRAINT="$constraints"

fail() { echo "FAIL: $*" >&2; exit 1; }
# The crate's version as cargo resolves it (lint/Cargo.toml inherits the
# workspace's).
version=$(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "gradlint"))')
[ -n "$version" ] || { echo "error: could not read gradlint's version from cargo metadata" >&2; exit 2; }
description=$(sed -n 's/^description = "\(.*\)"$/\1/p' lint/Cargo.toml | head -n 1)
buggy=lint/tests/fixtures/GL001/optimizer_no_reset.py
clean=lint/tests/fixtures/GL001/reset_after_step_clean.py

echo "== building the wheel and the sdist (gradlint $version)"
"$maturin" build --release --quiet --out "$work/dist" >/dev/null 2>"$work/build.log" ||
  { cat "$work/build.log"; fail "maturin build"; }
"$maturin" sdist --out "$work/dist" >/dev/null 2>>"$work/build.log" ||
  { cat "$work/build.log"; fail "maturin sdist"; }
wheel=$(ls "$work"/dist/gradlint-"$version"-*.whl)
sdist="$work/dist/gradlint-$version.tar.gz"
[ -f "$sdist" ] || fail "no sdist $sdist"
echo "   $(basename "$wheel"), $(basename "$sdist")"

# expect_rc WANT CMD...: runs CMD, output in $work/out, fails unless it exits WANT.
expect_rc() {
  local want=$1; shift
  local rc=0
  "$@" >"$work/out" 2>&1 || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$work/out"; fail "$* exited $rc, expected $want"; }
}
expect_out() { grep -qF -- "$1" "$work/out" || { cat "$work/out"; fail "output lacks: $1"; }; }

# check_install NAME ARTIFACT: a fresh venv, `pip install ARTIFACT`, the command.
check_install() {
  local name=$1 artifact=$2 venv="$work/venv-$1"
  echo "== $name: pip install $(basename "$artifact") into a fresh venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$artifact" 2>"$work/pip.log" || { cat "$work/pip.log"; fail "pip install $name"; }
  # On the venv's PATH, with nothing else: the installed script.
  local bin
  bin=$(PATH="$venv/bin:/usr/bin:/bin" command -v gradlint) || fail "$name: gradlint not on the venv's PATH"
  [ "$bin" = "$venv/bin/gradlint" ] || fail "$name: gradlint resolves to $bin"
  expect_rc 0 "$bin" --version
  expect_out "gradlint $version"
  expect_rc 0 "$venv/bin/python" - "$version" "$description" <<'PY'
import importlib.metadata as m, sys
meta = m.metadata("gradlint")
assert meta["Version"] == sys.argv[1], meta["Version"]
assert meta["Summary"] == sys.argv[2], meta["Summary"]
assert meta["License"] == "MIT OR Apache-2.0" or "MIT OR Apache-2.0" in (meta.get("License-Expression") or ""), meta["License"]
from gradlint import find_gradlint_bin
print(find_gradlint_bin())
PY
  expect_out "$venv/bin/gradlint"
  # The buggy fixture: exit 1, the finding named with its position.
  expect_rc 1 "$bin" "$buggy"
  expect_out "$buggy:6:9: GL001 gradients pile up"
  expect_out "Found 1 problem in 1 file"
  expect_rc 1 "$venv/bin/python" -m gradlint "$buggy"
  expect_out "$buggy:6:9: GL001"
  # The clean one: exit 0.
  expect_rc 0 "$bin" "$clean"
  expect_out "Found 0 problems in 1 file"
  expect_rc 0 "$venv/bin/python" -m gradlint "$clean"
  # --diff shows, --fix writes the fixture's .fixed snapshot, then it is clean.
  cp "$buggy" "$work/train.py"
  expect_rc 1 "$bin" --diff "$work/train.py"
  expect_out "+        optimizer.zero_grad()"
  cmp -s "$buggy" "$work/train.py" || fail "$name: --diff wrote the file"
  expect_rc 0 "$bin" --fix "$work/train.py"
  expect_out "Found 1 problem (1 fixed, 0 remaining) in 1 file"
  cmp -s "$buggy.fixed" "$work/train.py" || fail "$name: --fix differs from $buggy.fixed"
  expect_rc 0 "$bin" "$work/train.py"
  # lint/README.md's CI commands: GitHub annotations and a schema-valid SARIF file.
  expect_rc 1 "$bin" --format github "$buggy"
  expect_out "::error title=gradlint GL001 missing-zero-grad,file=$buggy,line=6,col=9"
  expect_rc 1 "$bin" --format sarif --output "$work/gradlint.sarif" "$buggy"
  if [ -f .cache/sarif-schema-2.1.0.json ]; then
    expect_rc 0 "$tools_python" - "$work/gradlint.sarif" .cache/sarif-schema-2.1.0.json <<'PY'
import json, sys, jsonschema
sarif, schema = (json.load(open(p)) for p in sys.argv[1:3])
jsonschema.Draft7Validator(schema).validate(sarif)
assert sarif["runs"][0]["results"][0]["ruleId"] == "GL001"
PY
  else
    echo "   (no .cache/sarif-schema-2.1.0.json: scripts/test.sh fetches it; SARIF validation skipped)"
  fi
  echo "   ok: PATH, python -m, version and metadata, exit codes 1/0, --diff, --fix, github, SARIF"
}

check_install wheel "$wheel"
check_install sdist "$sdist"

echo "== lint/README.md's GitHub Actions snippet (also on the PyPI page) parses and runs these commands"
expect_rc 0 "$tools_python" - lint/README.md <<'PY'
import re, sys, yaml
text = open(sys.argv[1]).read()
block = re.search(r"<!-- gradlint-workflow -->\s*```yaml\n(.*?)```", text, re.S)
assert block, "README: no ```yaml block after <!-- gradlint-workflow -->"
workflow = yaml.safe_load(block.group(1))
steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
runs = "\n".join(s.get("run", "") for s in steps)
for needed in ("pip install gradlint", "gradlint --format github", "gradlint --format sarif --output gradlint.sarif"):
    assert needed in runs, needed
uploads = [s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif")]
assert uploads and uploads[0]["with"]["sarif_file"] == "gradlint.sarif", uploads
assert workflow["jobs"]["gradlint"]["permissions"]["security-events"] == "write"
PY

echo "== pre-commit try-repo: the gradlint hook on a buggy, then a fixed file"
demo="$work/demo"
mkdir -p "$demo"
git -C "$demo" init -q
cp "$buggy" "$demo/train.py"
git -C "$demo" add train.py
export PRE_COMMIT_HOME="$work/pre-commit-home"
# try-repo takes this repository's HEAD plus its uncommitted changes.
(cd "$demo" && expect_rc 1 "$pre_commit" try-repo "$root" gradlint --all-files)
expect_out "gradlint"
expect_out "Failed"
expect_out "train.py:6:9: GL001 gradients pile up"
cp "$buggy.fixed" "$demo/train.py"
git -C "$demo" add train.py
(cd "$demo" && expect_rc 0 "$pre_commit" try-repo "$root" gradlint --all-files)
expect_out "Passed"
echo "   ok: the hook fails on the buggy file naming GL001, passes on the fixed one"
echo "python package: OK"
