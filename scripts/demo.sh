#!/usr/bin/env bash
# The demo: installs what is missing, builds everything, and shows the three programs and
# the demo campaign as belay reads it. The campaign itself runs here once the coordinator
# and the trainer are in place (see docs/architecture.md for what is built so far).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)"

bin=build/bin
echo
"$bin/belay" --help
echo
"$bin/belayd" --version
"$bin/belay-worker" --version
"$bin/belay-worker" devices
echo
echo "# the demo campaign, as belay validates it (defaults filled in):"
"$bin/belay" validate --offline --print deploy/examples/demo.toml
