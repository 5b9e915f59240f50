#!/usr/bin/env bash
# Installs the Debian 12 packages that belay's build, tests and demo need. Idempotent: prints
# what it installed, or that nothing was missing. As a non-root user it prints the apt-get
# line to run instead. The CUDA toolkit (nvcc, cuBLASLt, NCCL) is not a Debian package; the
# build looks for it under /usr/local/cuda and builds the GPU path only when it is there.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # the fuzzing lane (scripts/fuzz.sh): clang 14 and its libFuzzer, ASan and UBSan runtimes
  clang libclang-rt-14-dev
  # the formatting check (scripts/check-format.sh)
  clang-format
  # RPC and storage
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  librocksdb-dev
  # worker tokens (HMAC-SHA-256) and the worker link's certificates
  libssl-dev
  # command line, logging, formats, checksums
  libcli11-dev libspdlog-dev libfmt-dev libtomlplusplus-dev nlohmann-json3-dev libxxhash-dev
  # numerics and distribution
  libopenblas-dev libopenmpi-dev openmpi-bin
  # Slurm client library
  libslurm-dev
  # belayd's /metrics (prometheus-cpp's pull exposer)
  prometheus-cpp-dev
  # tests; the Prometheus server scrapes belayd in tests/daemon/metrics_test.py (run on its
  # own port and data directory: the packaged service, enabled on :9090 where systemd runs,
  # is not used, and left as it is)
  libgtest-dev libgmock-dev prometheus
  # the numerical reference for the model (run with /usr/bin/python3)
  python3-torch python3-numpy python3-xxhash
  # demo corpus: the King James Bible as plain text (`bible Gen1:1-Rev22:21`), see docs/data.md
  bible-kjv bible-kjv-text
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: nothing missing (${#packages[@]} packages present)"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing ${#missing[@]} packages; run as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "deps: installing ${missing[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "deps: installed ${#missing[@]} packages: ${missing[*]}"
