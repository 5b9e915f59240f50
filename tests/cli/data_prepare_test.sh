#!/usr/bin/env bash
# System test of `belay data prepare`, run by ctest with the build's bin directory as argument:
# shard files and their sizes on small inputs, and the exit codes of its errors.
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$bin/belay" --help | grep -q data || fail "belay --help does not list data"

printf 'abc' > "$tmp/a.txt"
printf 'hello' > "$tmp/b.txt"
printf 'h\xc3\xa9' > "$tmp/c.txt"

# 1 + 3 + 1 + 5 = 10 tokens; the last 2 are val; train in shards of at most 3 tokens.
out=$("$bin/belay" data prepare --out "$tmp/o" --val-fraction 0.2 --shard-tokens 3 \
  "$tmp/a.txt" "$tmp/b.txt") || fail "prepare exited $?"
[[ $out == "train: 3 files, 8 tokens ($tmp/o/train_000000.bin .. train_000002.bin)
val: 1 file, 2 tokens ($tmp/o/val_000000.bin)" ]] || fail "summary was '$out'"
[[ $(cd "$tmp/o" && ls -A | tr '\n' ' ') == "train_000000.bin train_000001.bin train_000002.bin val_000000.bin " ]] \
  || fail "files: $(ls -A "$tmp/o")"
# A shard is a 1024-byte header and 2 bytes per token.
for f in train_000000.bin:1030 train_000001.bin:1030 train_000002.bin:1028 val_000000.bin:1028; do
  size=$(stat -c %s "$tmp/o/${f%%:*}")
  [[ $size == "${f##*:}" ]] || fail "${f%%:*} is $size bytes, want ${f##*:}"
done
# Header words: magic 20240520, version 1, 3 tokens; then end-of-text (256), 'a', 'b'.
words=$(od -An -t d4 -N 12 "$tmp/o/train_000000.bin" | tr -s ' ')
[[ $words == " 20240520 1 3" ]] || fail "header '$words'"
tokens=$(od -An -t u2 -j 1024 "$tmp/o/train_000000.bin" | tr -s ' ')
[[ $tokens == " 256 97 98" ]] || fail "tokens '$tokens'"
tokens=$(od -An -t u2 -j 1024 "$tmp/o/val_000000.bin" | tr -s ' ')
[[ $tokens == " 108 111" ]] || fail "val tokens '$tokens'"

# Defaults: 5% val (of 4 tokens, none), one shard per split; multi-byte UTF-8 stays bytes.
out=$("$bin/belay" data prepare --out "$tmp/d" "$tmp/c.txt")
[[ $out == "train: 1 file, 4 tokens ($tmp/d/train_000000.bin)
val: 0 files, 0 tokens" ]] || fail "default summary '$out'"
tokens=$(od -An -t u2 -j 1024 "$tmp/d/train_000000.bin" | tr -s ' ')
[[ $tokens == " 256 104 195 169" ]] || fail "utf-8 tokens '$tokens'"

expect_exit() {
  local want=$1
  shift
  set +e
  "$@" >"$tmp/stdout" 2>"$tmp/stderr"
  local rc=$?
  set -e
  [[ $rc == "$want" ]] || fail "'$*' exited $rc, want $want; stderr: $(cat "$tmp/stderr")"
}

# Bad arguments: exit 2.
expect_exit 2 "$bin/belay" data prepare "$tmp/a.txt"
expect_exit 2 "$bin/belay" data prepare --out "$tmp/x"
expect_exit 2 "$bin/belay" data prepare --out "$tmp/x" --val-fraction 1 "$tmp/a.txt"
expect_exit 2 "$bin/belay" data prepare --out "$tmp/x" --val-fraction abc "$tmp/a.txt"
expect_exit 2 "$bin/belay" data prepare --out "$tmp/x" --shard-tokens 0 "$tmp/a.txt"
expect_exit 2 "$bin/belay" data
[[ ! -e $tmp/x ]] || fail "a rejected command line created its output directory"

# Failures: exit 1 with a message naming the file.
expect_exit 1 "$bin/belay" data prepare --out "$tmp/x" "$tmp/a.txt" "$tmp/missing.txt"
grep -qx "belay data prepare: $tmp/missing.txt: cannot open: No such file or directory" \
  "$tmp/stderr" || fail "missing input: $(cat "$tmp/stderr")"
: > "$tmp/empty.txt"
expect_exit 1 "$bin/belay" data prepare --out "$tmp/x" "$tmp/empty.txt"
grep -qx "belay data prepare: $tmp/empty.txt: empty file" "$tmp/stderr" \
  || fail "empty input: $(cat "$tmp/stderr")"
expect_exit 1 "$bin/belay" data prepare --out "$tmp/a.txt/sub" "$tmp/b.txt"
grep -q "^belay data prepare: $tmp/a.txt/sub: cannot create the output directory" "$tmp/stderr" \
  || fail "unwritable output: $(cat "$tmp/stderr")"
expect_exit 1 "$bin/belay" data prepare --out "$tmp/o" "$tmp/b.txt"
grep -q "already holds shards" "$tmp/stderr" || fail "existing shards: $(cat "$tmp/stderr")"
[[ ! -e $tmp/x ]] || fail "a failed run left $tmp/x behind: $(ls -A "$tmp/x")"
echo "data_prepare_test: all checks passed"
