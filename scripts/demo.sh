#!/usr/bin/env bash
# The main job on the bundled MoE example (fixtures/tiny-deepseek-v3: DeepSeek-V3's architecture at toy
# width — MLA attention, one dense layer, then 8 routed experts + 1 shared expert per layer, bf16) in a
# configuration vllm-ascend accepts: all-DP (DP 4, TP 1) with expert parallelism and every fine-grained TP
# size set. Sets up, builds, prints the plan table, shards, verifies byte for byte against the source and
# runs the sharded forward pass (experts on their EP ranks, dispatch and combine simulated); then the
# same shard / verify / forward-check on the Ascend W8A8 and the FP8-block variants of the model, and the
# FP8 one cast to BF16 while sharding (--dtype bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release >&2
bin="$(swift build -c release --show-bin-path)/fineshard"
out="${1:-${FINESHARD_CACHE}/demo-out}"
model=fixtures/tiny-deepseek-v3
parallel=(--dp 4 --enable-expert-parallel --additional-config '{"finegrained_tp_config":
  {"embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 2,
   "oproj_tensor_parallel_size": 2, "mlp_tensor_parallel_size": 4}}')

echo "== plan: $model, DP 4 + EP 4, fine-grained TP embedding 2, lm_head 2, o_proj 2, mlp 4"
"$bin" plan "$model" "${parallel[@]}"
echo
echo "== shard into $out"
rm -rf "$out"
"$bin" shard "$model" -o "$out" "${parallel[@]}" --quiet
echo
echo "== verify --source"
"$bin" verify "$out" --source "$model" --quiet
echo
echo "== forward-check"
"$bin" forward-check "$out" --source "$model"

for variant in w8a8 fp8; do
  echo
  echo "== $model-$variant: shard, verify --source, forward-check"
  rm -rf "$out-$variant"
  "$bin" shard "$model-$variant" -o "$out-$variant" "${parallel[@]}" --quiet
  "$bin" verify "$out-$variant" --source "$model-$variant" --quiet
  "$bin" forward-check "$out-$variant" --source "$model-$variant"
done

echo
echo "== $model-fp8 cast to BF16 while sharding (--dtype bf16, for NPUs without FP8): shard, verify --source"
echo "   (recomputes every cast from the FP8 bytes), forward-check against the dequantized source, merge"
rm -rf "$out-bf16" "$out-bf16-merged"
"$bin" shard "$model-fp8" -o "$out-bf16" "${parallel[@]}" --dtype bf16 --quiet
"$bin" verify "$out-bf16" --source "$model-fp8" --quiet
"$bin" forward-check "$out-bf16" --source "$model-fp8"
"$bin" merge "$out-bf16" -o "$out-bf16-merged"
