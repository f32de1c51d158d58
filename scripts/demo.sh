#!/usr/bin/env bash
# The main job on the bundled example checkpoint (fixtures/tiny-llama), with the seed document's
# all-DP configuration: every fine-grained TP size set. Sets up, builds, prints the plan table,
# shards, verifies byte for byte against the source, and runs the sharded forward pass.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release >&2
bin="$(swift build -c release --show-bin-path)/fineshard"
out="${1:-${FINESHARD_CACHE}/demo-out}"
config='{"finegrained_tp_config": {"embedding_tensor_parallel_size": 8, "lmhead_tensor_parallel_size": 8,
  "oproj_tensor_parallel_size": 8, "mlp_tensor_parallel_size": 8}}'

echo "== plan: fixtures/tiny-llama, DP 16, every fine-grained TP size 8"
"$bin" plan fixtures/tiny-llama --dp 16 --additional-config "$config"
echo
echo "== shard into $out"
rm -rf "$out"
"$bin" shard fixtures/tiny-llama -o "$out" --dp 16 --additional-config "$config" --quiet
echo
echo "== verify --source"
"$bin" verify "$out" --source fixtures/tiny-llama --quiet
if "$bin" help forward-check >/dev/null 2>&1; then
  echo
  echo "== forward-check"
  "$bin" forward-check "$out" --source fixtures/tiny-llama
fi
