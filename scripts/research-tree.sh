#!/usr/bin/env bash
# The research tree of the speed benchmark: every repository of the wild
# list (lint/corpus/wild.toml) at its pinned commit, exported whole into one
# folder, from git copies under MIRRORS (OWNER+NAME/repo, bare or not). A
# repository whose copy is missing, or whose pinned commit does not export
# whole (a shallow snapshot without it), is left out and counted.
# Usage: bash scripts/research-tree.sh MIRRORS OUT
#   then: bash scripts/bench-lint.sh OUT 7
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 MIRRORS OUT" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
mirrors=$1 out=$2
mkdir -p "$out"
kept=0 missing=0 partial=0
while read -r repo commit; do
  name=${repo/\//+}
  gd=""
  for d in "$mirrors/$name/repo/.git" "$mirrors/$name/repo"; do
    [ -f "$d/HEAD" ] && { gd=$d; break; }
  done
  if [ -z "$gd" ]; then missing=$((missing + 1)); continue; fi
  dest="$out/$name"
  rm -rf "$dest" && mkdir -p "$dest"
  if git --git-dir="$gd" archive "$commit" 2>/dev/null | tar -x -C "$dest" 2>/dev/null; then
    kept=$((kept + 1))
  else
    rm -rf "$dest"; partial=$((partial + 1))
  fi
done < <(python3 - "$root/lint/corpus/wild.toml" <<'PY'
import sys, tomllib
for r in tomllib.load(open(sys.argv[1], "rb"))["repo"]:
    print(r["repo"], r["commit"])
PY
)
echo "research tree: $kept repositories in $out ($missing without a copy, $partial whose commit did not export whole)"
