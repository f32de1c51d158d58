#!/usr/bin/env bash
# DeepSeek-R1 at real width, per layer (issue 13, "Real size").
#
#   scripts/bench_r1_layers.sh [--keep] [--workdir DIR] [--seed N] [--no-build] [--bin FINESHARD]
#                              [--fc-args "ARGS"] [--out FILE] [--min-free-gb N]
#
#   1. builds release fineshard (.build-bench, like scripts/bench.sh; --no-build reuses it; --bin uses
#      another binary, e.g. one built on another branch);
#   2. generates the 2-layer DeepSeek-R1 W8A8 checkpoint at real width (scripts/bench/make_r1_layers.py,
#      ~15.8 GB; cached by seed in $FINESHARD_BENCH_DIR, default /tmp/fineshard-bench);
#   3. shards it with DP 32 + --enable-expert-parallel + every fine-grained size 8 (embedding, lm_head,
#      o_proj, MLP) into WORKDIR/out (default $FINESHARD_BENCH_DIR/r1-work; ~35 GB), defaults otherwise
#      (source hashed into the manifest, output synced before the manifest: what a user runs);
#   4. verify OUT (hashes only);
#   5. forward-check OUT --source CKPT --layers 0,1 [--fc-args, split on spaces, e.g. "--tokens-per-rank 1"]
#      (target: peak RSS <= 4 GiB). A fineshard without --layers stops here: the script says so and exits
#      3 after the table. Exit status otherwise: forward-check's (0 passed, 1 a difference).
# Wall time from `date`, peak RSS from /usr/bin/time -v (fineshard reads with pread, so its RSS is its own
# memory, not the page cache); `sync` before every timed step; disk use from du. Prints a table; --out FILE
# appends it to FILE (e.g. docs/PERFORMANCE.md). Deletes WORKDIR/out at the end unless --keep (also on
# failure); never deletes the source checkpoint.
# Refuses to start (exit 2) with less than --min-free-gb (default 60) free on the filesystem of WORKDIR,
# less the size of a cached source checkpoint that lives there already.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

KEEP=0; BUILD=1; SEED=0; DOC=; MIN_FREE_GB=60; BIN=; FC_ARGS=
BENCH_DIR=${FINESHARD_BENCH_DIR:-/tmp/fineshard-bench}
WORKDIR=$BENCH_DIR/r1-work
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --workdir) shift; WORKDIR=$1 ;;
        --seed) shift; SEED=$1 ;;
        --no-build) BUILD=0 ;;
        --out) shift; DOC=$1 ;;
        --min-free-gb) shift; MIN_FREE_GB=$1 ;;
        --bin) shift; BIN=$1; BUILD=0 ;;
        --fc-args) shift; FC_ARGS=$1 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PY=${FINESHARD_PYTHON:-$HOME/.cache/fineshard/venv/bin/python}
[ -x "$PY" ] || { echo "no Python at $PY: run 'source scripts/setup.sh' first" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "GNU time is missing (apt-get install time)" >&2; exit 2; }
CKPT=$BENCH_DIR/deepseek-r1-2layers-seed$SEED
OUT=$WORKDIR/out
LOGS=$WORKDIR/logs
LAYERS=0,1
FG8='{"finegrained_tp_config": {"embedding_tensor_parallel_size": 8, "lmhead_tensor_parallel_size": 8, "oproj_tensor_parallel_size": 8, "mlp_tensor_parallel_size": 8}}'

log() { echo "[bench-r1 $(date +%T)] $*" >&2; }
gib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1073741824 }'; }
gb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e9 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }   # from KiB

# Disk: the source (if not cached yet) and the shards go to the same filesystem here.
mkdir -p "$BENCH_DIR" "$WORKDIR"
avail_kb=$(df -Pk "$WORKDIR" | awk 'NR == 2 { print $4 }')
cached_kb=0
if [ -f "$CKPT/COMPLETE" ] && [ "$(df -P "$CKPT" | awk 'NR == 2 { print $1 }')" = "$(df -P "$WORKDIR" | awk 'NR == 2 { print $1 }')" ]; then
    cached_kb=$(du -sk "$CKPT" | cut -f1)
fi
need_kb=$(( MIN_FREE_GB * 1000000 - cached_kb ))
if [ "$avail_kb" -lt "$need_kb" ]; then
    echo "refusing to start: $(( avail_kb / 1000000 )) GB free on $(df -P "$WORKDIR" | awk 'NR == 2 { print $6 }') (for $WORKDIR)," \
        "this benchmark needs $(( need_kb / 1000000 )) GB (~16 GB source + ~35 GB shards + headroom;" \
        "a cached source counts as already there). Free space, or point --workdir / FINESHARD_BENCH_DIR elsewhere." >&2
    exit 2
fi
log "disk: $(( avail_kb / 1000000 )) GB free, $(( need_kb / 1000000 )) GB needed"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

cleanup() {
    if [ "$KEEP" = 0 ] && [ -d "$OUT" ]; then
        log "deleting $OUT (--keep keeps it)"
        rm -rf "$OUT"
    fi
}
trap cleanup EXIT

if [ "$BUILD" = 1 ]; then
    log "building release fineshard"
    swift build -c release --scratch-path .build-bench >&2
fi
BIN=${BIN:-$ROOT/.build-bench/release/fineshard}
[ -x "$BIN" ] || { echo "no binary at $BIN (build with: swift build -c release --scratch-path .build-bench)" >&2; exit 2; }
rm -rf "$LOGS" "$OUT"; mkdir -p "$LOGS"

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); }   # step, wall s, CPU s, peak RSS, notes

# timed NAME -- command...: sets T_SECONDS, T_CPU (user + system), T_RSS_KB, T_RC; output in $LOGS/NAME.out
timed() {
    local name=$1; shift 2
    local t0 t1
    sync
    t0=$(date +%s.%N)
    T_RC=0
    /usr/bin/time -v -o "$LOGS/$name.time" "$@" > "$LOGS/$name.out" 2> "$LOGS/$name.err" || T_RC=$?
    t1=$(date +%s.%N)
    T_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    T_RSS_KB=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$LOGS/$name.time" 2>/dev/null || echo 0)
    T_CPU=$(awk -F': ' '/(User|System) time/ { t += $2 } END { printf "%.1f", t }' "$LOGS/$name.time" 2>/dev/null || echo 0)
    log "$name: ${T_SECONDS} s (CPU ${T_CPU} s), peak RSS $(mib "${T_RSS_KB:-0}") MiB, exit $T_RC"
}

# 1. The source checkpoint.
if "$PY" scripts/bench/make_r1_layers.py "$CKPT" --layers 2 --seed "$SEED" --check; then
    gen_s=$(tr ' ' '\n' < "$CKPT/COMPLETE" | awk -F= '$1 == "seconds" { print $2 }')
    gen_rss=$(tr ' ' '\n' < "$CKPT/COMPLETE" | awk -F= '$1 == "peak_rss" { print $2 }')
    gen_cpu=$(tr ' ' '\n' < "$CKPT/COMPLETE" | awk -F= '$1 == "cpu_seconds" { print $2 }')
    row "generate the checkpoint (cached: the run that made it)" "$gen_s" "${gen_cpu:-—}" "$(( gen_rss / 1048576 )) MiB" "$CKPT"
else
    log "generating $CKPT (~16 GB)"
    timed generate -- "$PY" scripts/bench/make_r1_layers.py "$CKPT" --layers 2 --seed "$SEED"
    [ "$T_RC" = 0 ] || { cat "$LOGS/generate.err" >&2; exit 3; }
    row "generate the checkpoint" "$T_SECONDS" "$T_CPU" "$(mib "$T_RSS_KB") MiB" "$CKPT"
fi
src_bytes=$(du -sb "$CKPT" | cut -f1)
src_disk=$(du -sk "$CKPT" | cut -f1)
src_files=$(find "$CKPT" -maxdepth 1 -name '*.safetensors' | wc -l)

# 2. shard.
cat $(find "$CKPT" -maxdepth 1 -name '*.safetensors' | sort) > /dev/null   # same warm start for every run
timed shard -- "$BIN" shard "$CKPT" -o "$OUT" --dp 32 --enable-expert-parallel --additional-config "$FG8" --quiet --json
if [ "$T_RC" != 0 ]; then
    cat "$LOGS/shard.err" >&2
    echo "shard failed (exit $T_RC); logs in $LOGS" >&2
    exit "$T_RC"
fi
SHARD_S=$T_SECONDS; SHARD_RSS=$T_RSS_KB
out_bytes=$(du -sb "$OUT" | cut -f1)
out_disk=$(du -sk "$OUT" | cut -f1)
out_files=$(find "$OUT" -maxdepth 1 -name '*.safetensors' | wc -l)
row "shard: DP 32, EP, every fine-grained size 8" "$SHARD_S" "$T_CPU" "$(mib "$SHARD_RSS") MiB" \
    "$(gb "$out_bytes") GB written in $out_files files; source hashed, output synced"

# 3. verify (hashes).
timed verify -- "$BIN" verify "$OUT" --quiet --json
row "verify OUT (hashes)" "$T_SECONDS" "$T_CPU" "$(mib "$T_RSS_KB") MiB" "$(gb "$out_bytes") GB hashed; exit $T_RC"
VERIFY_RC=$T_RC

# 4. forward-check per layer.
FC_STATUS=
if ! "$BIN" forward-check --help 2>&1 | grep -q -- '--layers'; then
    FC_STATUS="not run: this fineshard's forward-check has no --layers yet"
    row "forward-check --layers $LAYERS" "—" "—" "—" "$FC_STATUS"
else
    # shellcheck disable=SC2086
    timed forward-check -- "$BIN" forward-check "$OUT" --source "$CKPT" --layers "$LAYERS" $FC_ARGS --json
    summary=$("$PY" - "$LOGS/forward-check.out" <<'EOF' 2>/dev/null || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
parts = []
if "ok" in r:
    parts.append("passed" if r["ok"] else f"FAILED ({len(r.get('failures', []))} failures)")
rel = [x.get("maxRelError") for x in r.get("ranks", []) if isinstance(x, dict) and x.get("maxRelError") is not None]
if rel:
    parts.append(f"max rel error {max(rel):.2e} over {len(rel)} ranks")
print(", ".join(parts))
EOF
)
    FC_RSS=$T_RSS_KB
    fc_target=$([ "$FC_RSS" -le $((4 * 1024 * 1024)) ] && echo "met" || echo "MISSED")
    row "forward-check --layers $LAYERS${FC_ARGS:+ $FC_ARGS}" "$T_SECONDS" "$T_CPU" "$(mib "$FC_RSS") MiB" \
        "exit $T_RC${summary:+; $summary}; peak RSS ≤ 4 GiB: $fc_target"
fi

# Report.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
report() {
    echo "## DeepSeek-R1 at real width, 2 layers, per layer (issue 13; \`scripts/bench_r1_layers.sh\`)"
    echo
    echo "$(date -u +'%Y-%m-%d %H:%M UTC'), commit $commit, $(nproc) cores, load average $LOAD_START at the start and" \
        "$(cut -d' ' -f1-3 /proc/loadavg) at the end; $(( avail_kb / 1000000 )) GB free before the run. Wall times swing" \
        "with other work on the machine and with writeback; CPU time (user + system) and peak RSS much less."
    echo "Source: \`$CKPT\` (\`scripts/bench/make_r1_layers.py --layers 2 --seed $SEED\`): hidden 7168, 128 MLA heads,"
    echo "vocab 129280, layer 0 dense (18432), layer 1 MoE (256 routed experts of 2048 + 1 shared), W8A8 int8 with"
    echo "per-channel scales, random data in every tensor; $src_files safetensors files."
    echo "Binary: \`$BIN\` ($("$BIN" --version 2>/dev/null || echo "version unknown"))."
    echo "Shard: \`fineshard shard CKPT -o OUT --dp 32 --enable-expert-parallel --additional-config '$FG8'\`."
    echo
    echo "| step | wall s | CPU s | peak RSS | notes |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Disk (du): source $(gib "$((src_disk * 1024))") GiB ($(gb "$src_bytes") GB of file bytes), output" \
        "$(gib "$((out_disk * 1024))") GiB ($(gb "$out_bytes") GB, $out_files safetensors files for 32 ranks)." \
        "$([ "$KEEP" = 1 ] && echo "Output kept in \`$OUT\`." || echo "The output was deleted afterwards; the source is kept.")"
    [ -z "$FC_STATUS" ] || { echo; echo "forward-check: $FC_STATUS."; }
    echo
}
report
if [ -n "$DOC" ]; then
    { echo; report; } >> "$DOC"
    log "appended to $DOC"
fi
[ "$VERIFY_RC" = 0 ] || { echo "verify failed (exit $VERIFY_RC); logs in $LOGS" >&2; exit "$VERIFY_RC"; }
if [ -n "$FC_STATUS" ]; then
    echo "forward-check --layers is not in this fineshard yet: shard and verify done, exiting 3" >&2
    exit 3
fi
exit "${T_RC:-0}"
