#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (see setup.sh), builds fineshard and runs every test:
# the Swift tests, which include the interop tests against the official Python libraries
# and the real all-MiniLM-L6-v2 checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The tree stays clean under the toolchain's formatter (.swift-format).
swift format lint --strict -r Sources Tests
swift build
swift test "$@"
