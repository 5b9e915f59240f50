#!/usr/bin/env bash
# Builds llm.c's train_gpt2cu, the peer scripts/gpu-check.sh measures belay's GPU step against:
#   scripts/llmc-build.sh SRC OUT [LOG]
# SRC is an llm.c source tree (Makefile, train_gpt2.cu, llmc/; see scripts/llmc-prepare.sh). It is
# left untouched: llm.c's own Makefile runs in a scratch copy and the binary is copied to OUT.
# Flags: one GPU, bf16 (PRECISION=BF16), no MPI (NO_USE_MPI=1), no NCCL (NO_MULTI_GPU=1), no
# cuDNN (USE_CUDNN=0), for compute capability $BELAY_LLMC_ARCH (90: H100, H200) given
# explicitly, since the Makefile would otherwise ask nvidia-smi, which a build machine may lack.
# NVML (llm.c includes it only when nvml.h is present, for its optional GPU-utilisation log) is
# linked from the CUDA stubs when the header is there. bench/llmc_cuda13.h is force-included
# (the one CUDA 13 API change the llm.c snapshot trips over; see there). The make output goes to LOG (default
# stderr); exits non-zero when nvcc is missing or the build fails.
set -euo pipefail
usage="usage: scripts/llmc-build.sh SRC OUT [LOG]"
src=${1:?$usage}
out=${2:?$usage}
log=${3:-/dev/stderr}
arch=${BELAY_LLMC_ARCH:-90}
cuda=${CUDA_HOME:-/usr/local/cuda}
nvcc=$(command -v nvcc || true)
[ -n "$nvcc" ] || nvcc=$cuda/bin/nvcc
if [ ! -x "$nvcc" ]; then
  echo "llmc-build: no nvcc (not on PATH, not in $cuda/bin)" >"$log"
  exit 1
fi
for f in Makefile train_gpt2.cu llmc; do
  [ -e "$src/$f" ] || { echo "llmc-build: $src has no $f" >"$log"; exit 1; }
done
cuda=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
ldflags="-lcublas -lcublasLt"
if [ -e "$cuda/include/nvml.h" ]; then
  stubs=$(dirname "$(find "$cuda/lib64/stubs/" "$cuda"/targets/*/lib/stubs/ -name 'libnvidia-ml.so' \
    2>/dev/null | head -1)")
  [ "$stubs" != . ] && ldflags+=" -L$stubs"
  ldflags+=" -lnvidia-ml"
fi
shim=$(cd "$(dirname "$0")/.." && pwd)/bench/llmc_cuda13.h
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src"/. "$work"/
chmod -R u+w "$work"  # a read-only source stays removable
rm -f "$work/train_gpt2cu"
# Variables given on make's command line override the Makefile's own (its NVML link included).
(cd "$work" && PATH="$(dirname "$nvcc"):$PATH" make train_gpt2cu NVCC="$nvcc" NO_MULTI_GPU=1 \
  NO_USE_MPI=1 USE_CUDNN=0 PRECISION=BF16 GPU_COMPUTE_CAPABILITY="$arch" \
  NVCC_INCLUDES="-include $shim" NVCC_LDFLAGS="$ldflags") >"$log" 2>&1
cp "$work/train_gpt2cu" "$out"
