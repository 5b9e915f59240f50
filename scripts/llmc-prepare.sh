#!/usr/bin/env bash
# Puts llm.c beside the working tree for a GPU check: copies an llm.c source tree into peers/llmc
# (ignored by git; the folder scripts/gpu-check.sh reads by default), so that it can be carried
# to a GPU machine with the working tree, and, where this machine has nvcc, builds train_gpt2cu
# there too (scripts/llmc-build.sh, sm_90), for a GPU machine without nvcc.
#   scripts/llmc-prepare.sh [--from DIR] [--no-build]
# DIR: llm.c's Makefile, train_gpt2.cu and llmc/ (a snapshot is kept beside the checkout);
# default $BELAY_LLMC_SRC, else ../shared/peers/llmc relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
from=${BELAY_LLMC_SRC:-../shared/peers/llmc}
build=1
while [ $# -gt 0 ]; do
  case $1 in
    --from) from=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: scripts/llmc-prepare.sh [--from DIR] [--no-build]" >&2; exit 2 ;;
  esac
done
dest=peers/llmc
for f in Makefile train_gpt2.cu llmc; do
  [ -e "$from/$f" ] || { echo "llmc-prepare: $from has no $f (not an llm.c source tree)" >&2; exit 1; }
done
if [ "$(readlink -f "$from")" != "$(readlink -f "$dest")" ]; then
  rm -rf "$dest"
  mkdir -p "$dest"
  cp -r "$from"/. "$dest"/
  chmod -R u+w "$dest"  # the snapshot may be read-only; the copy is replaced next time
fi
rm -f "$dest/train_gpt2cu" "$dest/build.log"
if [ "$build" = 1 ]; then
  if scripts/llmc-build.sh "$dest" "$dest/train_gpt2cu" "$dest/build.log"; then
    echo "llmc-prepare: built $dest/train_gpt2cu"
  else
    echo "llmc-prepare: no train_gpt2cu built here ($(tail -1 "$dest/build.log"));" \
      "gpu-check builds it on the GPU machine" >&2
  fi
fi
echo "llmc-prepare: $dest ready ($(du -sh "$dest" | cut -f1)); carry peers/llmc to the GPU machine"
