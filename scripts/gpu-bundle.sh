#!/usr/bin/env bash
# Builds the GPU tests and benchmark here (CUDA, sm_90) and packs them with the shared
# libraries they need, for a GPU machine that lacks this project's build dependencies:
#   scripts/gpu-bundle.sh OUT.tar.xz      then there:   scripts/gpu-check.sh --prebuilt OUT.tar.xz
# Left out: the C and C++ runtime, the CUDA driver, cuBLASLt and NCCL (most of a gigabyte;
# gpu-check finds the GPU machine's own: its CUDA's, or the NCCL of its PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu-bundle.sh OUT.tar.xz}
build=${BELAY_GPU_BUILD_DIR:-build-gpu}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBELAY_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
targets=(device_test cuda_kernels_test cuda_gpt2_test comm_nccl_communicator_test gpu_train_bench belay belay-worker belayd)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for t in "${targets[@]}"; do
  f=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
  [ -n "$f" ] || { echo "gpu-bundle: $t not built" >&2; exit 1; }
  cp "$f" "$stage/bin/"
  strip --strip-debug "$stage/bin/$t"
done
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libgcc_s|libstdc\+\+|libcuda\.so|libcublasLt\.so|libnccl\.so)'
for f in "$stage"/bin/*; do
  ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] && continue
  cp -L "$path" "$stage/lib/$name"
done
tar -C "$stage" -cJf "$out" bin lib
echo "gpu-bundle: $out ($(du -h "$out" | cut -f1)): $(ls "$stage/bin" | tr '\n' ' ')"
