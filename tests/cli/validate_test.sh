#!/usr/bin/env bash
# System test of `belay validate` and the --version flags, run by ctest with the build's
# bin directory and the source tree as arguments.
set -euo pipefail
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Every program answers --version with its name and version.
for prog in belay belayd belay-worker; do
  out=$("$bin/$prog" --version)
  [[ $out =~ ^$prog\ [0-9]+\.[0-9]+\.[0-9]+ ]] || fail "$prog --version printed '$out'"
done
"$bin/belay" --help | grep -q validate || fail "belay --help does not list validate"

# The shipped examples are valid (offline: their data lives elsewhere).
for f in "$src"/deploy/examples/*.toml; do
  out=$("$bin/belay" validate --offline "$f") || fail "example $f is invalid"
  [[ $out == OK\ * ]] || fail "validate $f printed '$out'"
done

# Apertus with AdEMAMix and document masking (the fuzzing seed, so that it stays valid)
# validates on CPU ranks. With GPUs both are refused at their keys: the GPU trainer has the
# GPT-2 model and the AdamW update only.
cp "$src/fuzz/corpus/campaign_spec/apertus_ademamix.toml" "$tmp/apertus.toml"
out=$("$bin/belay" validate --offline "$tmp/apertus.toml") || fail "apertus on CPU is invalid"
[[ $out == "OK apertus-ademamix" ]] || fail "validate apertus.toml printed '$out'"
printf 'gpus_per_node = 4\n' >> "$tmp/apertus.toml"
set +e
err=$("$bin/belay" validate --offline "$tmp/apertus.toml" 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc == 2 ]] || fail "apertus on GPUs: exit $rc, want 2"
arch_line=$(grep -n '^arch = ' "$tmp/apertus.toml" | cut -d: -f1)
name_line=$(grep -n '^name = "ademamix"' "$tmp/apertus.toml" | cut -d: -f1)
want="$tmp/apertus.toml:$arch_line:8: model.arch: \"apertus\" is not supported on GPUs yet"
want+=" (resources.gpus_per_node > 0); allowed with GPUs: \"gpt2\""
want+=$'\n'"$tmp/apertus.toml:$name_line:8: optimizer.name: \"ademamix\" is not supported on GPUs yet"
want+=" (resources.gpus_per_node > 0; the GPU update is AdamW); allowed with GPUs: \"adamw\""
[[ $err == "$want" ]] || fail "apertus on GPUs: got '$err'"

# A campaign whose data exists validates with file-system checks on; paths are relative to
# the campaign file, not to the working directory.
mkdir -p "$tmp/c/data" "$tmp/elsewhere"
touch "$tmp/c/data/train_000.bin" "$tmp/c/data/val_000.bin"
sed -e 's#../../var/demo/data/#data/#' -e 's#../../var/demo/checkpoints#ckpt#' \
  "$src/deploy/examples/demo.toml" > "$tmp/c/demo.toml"
out=$(cd "$tmp/elsewhere" && "$bin/belay" validate ../c/demo.toml) || fail "local demo copy invalid"
[[ $out == "OK demo" ]] || fail "validate printed '$out'"

# Missing data: exit 2 and an error naming file, line, column and key.
rm "$tmp/c/data/train_000.bin"
set +e
err=$("$bin/belay" validate "$tmp/c/demo.toml" 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc == 2 ]] || fail "missing data: exit $rc, want 2"
line=$(grep -n '^train = ' "$tmp/c/demo.toml" | cut -d: -f1)
[[ $err == "$tmp/c/demo.toml:$line:9: data.train: \"$tmp/c/data/train_*.bin\" matches no file" ]] \
  || fail "missing data: got '$err'"

# Several files: one bad file makes the exit code 2, good ones still print OK.
printf '[campaign]\nname = 5\n' > "$tmp/bad.toml"
set +e
out=$("$bin/belay" validate --offline "$src/deploy/examples/demo.toml" "$tmp/bad.toml" 2>"$tmp/err")
rc=$?
set -e
[[ $rc == 2 ]] || fail "mixed files: exit $rc, want 2"
[[ $out == "OK demo" ]] || fail "mixed files: stdout '$out'"
grep -q "^$tmp/bad.toml:2:8: campaign.name: expected a string, got integer 5$" "$tmp/err" \
  || fail "mixed files: stderr $(cat "$tmp/err")"

# A file that does not exist.
set +e
err=$("$bin/belay" validate "$tmp/nope.toml" 2>&1)
rc=$?
set -e
[[ $rc == 2 && $err == "$tmp/nope.toml:1:1: cannot open: No such file or directory" ]] \
  || fail "missing file: rc $rc, '$err'"
# Structures no campaign has, deep enough to overflow the parser's stack (one used to kill
# belay with SIGSEGV): refused before parsing, with the position and the bound crossed.
python3 - "$tmp" <<'PY'
import pathlib, sys
d = pathlib.Path(sys.argv[1])
(d / "dotted.toml").write_text("[campaign]\nname = \"deep\"\n" + "a" + ".a" * 300000 + " = 1\n")
(d / "arrays.toml").write_text("x = 1\nmodel = " + "[" * 100000 + "]" * 100000 + "\n")
(d / "tables.toml").write_text("t = " + "{ a = " * 5000 + "1" + " }" * 5000 + "\n")
(d / "header.toml").write_text("[" + "a." * 300000 + "a]\n")
(d / "quoted.toml").write_text('s = "' + "[" * 100000 + '"\n')
PY
for f in dotted:3:1:"key of 300001 dotted parts; a campaign file allows at most 8" \
         arrays:2:25:"nested 17 levels deep" \
         tables:1:97:"nested 17 levels deep" \
         header:1:1:"table header of 300001 dotted parts"; do
  IFS=: read -r name line col msg <<< "$f"
  set +e
  err=$("$bin/belay" validate --offline "$tmp/$name.toml" 2>&1)
  rc=$?
  set -e
  [[ $rc == 2 ]] || fail "$name.toml: exit $rc, want 2 (a crash is 139): $err"
  [[ $err == "$tmp/$name.toml:$line:$col: $msg"* ]] || fail "$name.toml: got '${err:0:300}'"
done
# Brackets inside a string are not structure: that file gets the ordinary missing-section errors.
set +e
err=$("$bin/belay" validate --offline "$tmp/quoted.toml" 2>&1)
set -e
[[ $err == "$tmp/quoted.toml:1:1: campaign: missing required section [campaign]"* ]] \
  || fail "quoted.toml: got '${err:0:300}'"

echo "validate_test: all checks passed"
