#!/usr/bin/env bash
# The main job on the bundled example checkpoint: set up, build, and inspect fixtures/tiny-llama.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release >&2
bin="$(swift build -c release --show-bin-path)/fineshard"
"$bin" inspect fixtures/tiny-llama
