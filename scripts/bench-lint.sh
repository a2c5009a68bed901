#!/usr/bin/env bash
# gradlint vs `ruff check` (one cheap rule, no cache) on the same tree of
# Python files, alternating runs in one session (each tool first in every
# other round); prints the median wall and CPU (user + system) time of
# each, the ratios gradlint/ruff, and lines per second.
# Usage: bash scripts/bench-lint.sh [TREE] [RUNS]
#   TREE  a folder of Python files (default: the library corpus,
#         .cache/corpus/src, downloaded by scripts/corpus.sh)
#   RUNS  runs of each tool (default 7); `bench-lint.sh 5` alone is RUNS
# The gradlint binary is built in $CARGO_TARGET_DIR (default target/);
# GRADLINT=/path/to/gradlint times that one instead (another build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tree=""
runs=7
if [ $# -ge 1 ] && [[ ! "$1" =~ ^[0-9]+$ ]]; then tree=$(cd "$1" && pwd); shift; fi
[ $# -ge 1 ] && runs=$1
cd "$root"
if [ -z "$tree" ]; then
  bash scripts/corpus.sh
  tree=$root/.cache/corpus/src
fi
[ -x .cache/venv/bin/ruff ] || { python3 -m venv .cache/venv && .cache/venv/bin/pip install -q ruff==0.8.4; }
if [ -n "${GRADLINT:-}" ]; then
  gradlint=$GRADLINT
else
  cargo build --release -q -p gradlint
  gradlint="${CARGO_TARGET_DIR:-$root/target}/release/gradlint"
fi
py_files() { find "$tree" \( -name '*.py' -o -name '*.pyi' \) -type f; }
files=$(py_files | wc -l)
notebooks=$(find "$tree" -name '*.ipynb' -type f | wc -l)
lines=$(py_files | tr '\n' '\0' | xargs -0 cat | wc -l)
gl=(); rf=(); glc=(); rfc=()
# Wall, user and system seconds of one command, its output discarded.
timed() {
  local TIMEFORMAT='%R %U %S'
  { time "$@" > /dev/null 2>&1; } 2>&1 | tail -1
}
run_gradlint() { timed "$gradlint" --format json "$tree"; }
run_ruff() { timed .cache/venv/bin/ruff check --no-cache --isolated --select E711 --exit-zero --quiet "$tree"; }
record() { # wall-array cpu-array "wall user sys"
  local -n w=$1 c=$2
  read -r wall user sys <<< "$3"
  w+=("$wall"); c+=("$(echo "$user + $sys" | bc -l)")
}
# The first run of a round is slower (caches, clocks): each tool goes first
# in every other round.
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then
    record gl glc "$(run_gradlint)"; record rf rfc "$(run_ruff)"
  else
    record rf rfc "$(run_ruff)"; record gl glc "$(run_gradlint)"
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
g=$(median "${gl[@]}"); r=$(median "${rf[@]}")
gc=$(median "${glc[@]}"); rc=$(median "${rfc[@]}")
echo "tree: $tree"
echo "files: $files Python files ($lines lines) and $notebooks notebooks; $runs runs each, alternating, $(nproc) cores"
printf 'gradlint        wall median %.3f s  cpu median %.3f s  %.0f lines/s\n' "$g" "$gc" "$(echo "$lines / $g" | bc -l)"
printf 'ruff (E711)     wall median %.3f s  cpu median %.3f s  %.0f lines/s\n' "$r" "$rc" "$(echo "$lines / $r" | bc -l)"
printf 'ratio gradlint/ruff: wall %.2f, cpu %.2f\n' "$(echo "$g / $r" | bc -l)" "$(echo "$gc / $rc" | bc -l)"
