#!/usr/bin/env bash
# Downloads (once) pinned releases of big ML packages from PyPI into
# .cache/corpus/src: correct training code nobody here wrote, for
# scripts/lint-corpus.sh and scripts/bench-lint.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=.cache/corpus
mkdir -p "$corpus/dl" "$corpus/src"
wheels=(transformers==4.46.3 accelerate==1.1.1 lightning==2.4.0 timm==1.0.11 diffusers==0.31.0
        pytorch-ignite==0.5.1 skorch==1.0.0 fastai==2.7.18 trl==0.12.1 peft==0.13.2)
sdists=(transformers==4.46.3 accelerate==1.1.1 diffusers==0.31.0)
if [ ! -f "$corpus/.complete" ]; then
  python3 -m pip download --no-deps --only-binary=:all: -q -d "$corpus/dl" "${wheels[@]}" \
    || { echo "error: could not download the corpus wheels from PyPI" >&2; exit 2; }
  python3 -m pip download --no-deps --no-binary=:all: -q -d "$corpus/dl" "${sdists[@]}" \
    || { echo "error: could not download the corpus sdists from PyPI" >&2; exit 2; }
  for w in "$corpus"/dl/*.whl; do
    d="$corpus/src/$(basename "$w" .whl)"; mkdir -p "$d"; python3 -m zipfile -e "$w" "$d"
  done
  for t in "$corpus"/dl/*.tar.gz; do tar xzf "$t" -C "$corpus/src"; done
  touch "$corpus/.complete"
fi
echo "corpus: $(find "$corpus/src" -name '*.py' | wc -l) Python files, $(find "$corpus/src" -name '*.py' -exec cat {} + | wc -l) lines"
