#!/usr/bin/env bash
# gradlint vs `ruff check` (one cheap rule, no cache) on the same tree of
# Python files (scripts/corpus.sh), alternating runs in one session (each
# tool first in every other round); prints
# the median wall time of each, the ratio, and lines per second.
# Usage: bash scripts/bench-lint.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
bash scripts/corpus.sh
[ -x .cache/venv/bin/ruff ] || { python3 -m venv .cache/venv && .cache/venv/bin/pip install -q ruff==0.8.4; }
cargo build --release -q -p gradlint
tree=.cache/corpus/src
lines=$(find "$tree" -name '*.py' -exec cat {} + | wc -l)
gl=(); rf=()
now() { date +%s.%N; }
run_gradlint() { target/release/gradlint --format json "$tree" > /dev/null || true; }
run_ruff() { .cache/venv/bin/ruff check --no-cache --isolated --select E711 --exit-zero --quiet "$tree" > /dev/null; }
# The first run of a round is slower (caches, clocks): each tool goes first
# in every other round.
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then
    t0=$(now); run_gradlint; t1=$(now); run_ruff; t2=$(now)
    gl+=("$(echo "$t1 - $t0" | bc -l)"); rf+=("$(echo "$t2 - $t1" | bc -l)")
  else
    t0=$(now); run_ruff; t1=$(now); run_gradlint; t2=$(now)
    rf+=("$(echo "$t1 - $t0" | bc -l)"); gl+=("$(echo "$t2 - $t1" | bc -l)")
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
g=$(median "${gl[@]}"); r=$(median "${rf[@]}")
echo "files: $(find "$tree" -name '*.py' | wc -l) Python files, $lines lines; $runs runs each, alternating, $(nproc) cores"
printf 'gradlint        median %.3f s  %.0f lines/s\n' "$g" "$(echo "$lines / $g" | bc -l)"
printf 'ruff (E711)     median %.3f s  %.0f lines/s\n' "$r" "$(echo "$lines / $r" | bc -l)"
printf 'ratio gradlint/ruff: %.2f\n' "$(echo "$g / $r" | bc -l)"
