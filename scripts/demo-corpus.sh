#!/usr/bin/env bash
# The demo corpus (docs/data.md): the King James Bible from Debian's bible-kjv packages
# (scripts/deps.sh installs them) as two documents, the Old and the New Testament, tokenised
# byte by byte into llm.c shards. The campaigns of deploy/examples/ that run on this machine
# read it from var/demo/data; tests prepare it in a directory of their own.
#
#   scripts/demo-corpus.sh DIR BIN_DIR    # text under DIR/text, shards under DIR/data
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: scripts/demo-corpus.sh DIR BIN_DIR" >&2; exit 2; }
dir=$1
bin=$2
command -v bible >/dev/null ||
  { echo "demo-corpus.sh: no 'bible' program: scripts/deps.sh installs bible-kjv" >&2; exit 1; }
mkdir -p "$dir/text"
bible Gen1:1-Mal4:6 > "$dir/text/1-old-testament.txt"
bible Mat1:1-Rev22:21 > "$dir/text/2-new-testament.txt"
rm -rf "$dir/data"
"$bin/belay" data prepare --out "$dir/data" "$dir/text/1-old-testament.txt" \
  "$dir/text/2-new-testament.txt"
