#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (see setup.sh), builds fineshard and runs every test:
# the Swift tests (which include the interop tests against the official Python libraries and the
# real all-MiniLM-L6-v2 checkpoint), then, as root, the Slurm fan-out test on a real single-node
# Slurm cluster (scripts/slurm/test.sh installs Slurm when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The tree stays clean under the toolchain's formatter (.swift-format).
swift format lint --strict -r Sources Tests fuzz/Sources
# Every target imports only the layers below it (docs/ARCHITECTURE.md).
bash scripts/check_layers.sh
swift build
swift test "$@"
if [ "$(id -u)" -eq 0 ]; then
  swift build -c release
  FINESHARD_BIN="$(swift build -c release --show-bin-path)/fineshard" bash scripts/slurm/test.sh
else
  echo "test.sh: not root: skipping the Slurm test (scripts/slurm/test.sh installs and starts Slurm)" >&2
fi
bash scripts/vllm/test_engine.sh  # fineshard output loaded by a real vLLM (CPU build), vs the dense load
