#!/usr/bin/env bash
# HDF5 output benchmark (issue 17 item 1): `shard --format hdf5` against the safetensors shard of the
# same configuration in the same run, at several zstd levels.
#
#   scripts/bench/hdf5.sh [--runs N] [--levels "L1 L2 ..."] [--threads "T1 T2 ..."] [--case NAME] [--ranks LIST] [--no-build]
#
# The 1B synthetic Llama (scripts/bench/make_llama.py, cached in $FINESHARD_BENCH_DIR, default
# /tmp/fineshard-bench), the all-DP 8 / every fine-grained size 8 configuration of scripts/bench.sh
# (--case dp8-fg8, default) or TP 8 (--case tp8); --ranks writes only those ranks (one rank is one
# file: what a task of a fan-out writes, where only the chunks of that file can run in parallel). Each round runs the safetensors shard, then the
# HDF5 shard at every level (with the default --threads), then at the first level with each
# --threads value: interleaved, so each HDF5 time is compared with the safetensors time of its own
# round (machines shared with builds drift within minutes); CPU seconds (user + system, GNU time) are
# steadier than wall time on a loaded machine. Page cache warm, `sync` before each run,
# --no-source-hash --no-sync as in scripts/bench.sh. Prints the medians over rounds (seconds and CPU
# seconds, each with its ratio to safetensors, output bytes, uncompressed/compressed, peak RSS) and
# every round's times.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

RUNS=3; LEVELS="1 3"; THREADS=""; CASE=dp8-fg8; BUILD=1; RANKS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) shift; RUNS=$1 ;;
        --levels) shift; LEVELS=$1 ;;
        --threads) shift; THREADS=$1 ;;
        --case) shift; CASE=$1 ;;
        --ranks) shift; RANKS=(--ranks "$1") ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$CASE" in
    dp8-fg8) ARGS=(--dp 8 --layout hf --additional-config '{"finegrained_tp_config": {"embedding_tensor_parallel_size": 8, "lmhead_tensor_parallel_size": 8, "oproj_tensor_parallel_size": 8, "mlp_tensor_parallel_size": 8}}') ;;
    tp8) ARGS=(--dp 1 --tp 8 --layout hf) ;;
    *) echo "unknown case $CASE (dp8-fg8, tp8)" >&2; exit 2 ;;
esac

PY=${FINESHARD_PYTHON:-$HOME/.cache/fineshard/venv/bin/python}
BENCH_DIR=${FINESHARD_BENCH_DIR:-/tmp/fineshard-bench}
export FINESHARD_BENCH_DIR=$BENCH_DIR
WORK=$BENCH_DIR/hdf5-work
rm -rf "$WORK"; mkdir -p "$WORK"
[ -x /usr/bin/time ] || { apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }; }
[ "$BUILD" = 0 ] || swift build -c release --scratch-path .build-bench >&2
BIN=$ROOT/.build-bench/release/fineshard
CKPT=$("$PY" scripts/bench/make_llama.py --size 1B)
weights() { find "$1" -maxdepth 1 -type f \( -name '*.safetensors' -o -name '*.h5' \) | sort; }
bytes_of() { local t=0 s; for f in $(weights "$1"); do s=$(stat -c %s "$f"); t=$((t + s)); done; echo $t; }

RESULTS=$WORK/results.tsv
printf 'round\tname\tseconds\tcpu_seconds\tpeak_rss_kb\tbytes\n' > "$RESULTS"
one() {  # round name args...
    local round=$1 name=$2 out=$WORK/out; shift 2
    rm -rf "$out"
    cat $(weights "$CKPT") > /dev/null
    sync
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -v -o "$WORK/time" "$BIN" shard "$CKPT" -o "$out" "${ARGS[@]}" ${RANKS[@]+"${RANKS[@]}"} --no-source-hash --no-sync --quiet "$@" > /dev/null
    t1=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$(echo "$t1 - $t0" | bc)" \
        "$(awk -F': ' '/(User|System) time/ {t += $2} END {print t}' "$WORK/time")" \
        "$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time")" "$(bytes_of "$out")" >> "$RESULTS"
    rm -rf "$out"
}

FIRST=${LEVELS%% *}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((r = 1; r <= RUNS; r++)); do
    echo "[hdf5 bench $(date +%T)] round $r" >&2
    one "$r" safetensors
    for level in $LEVELS; do one "$r" "hdf5 level $level" --format hdf5 --compression-level "$level"; done
    for t in $THREADS; do one "$r" "hdf5 level $FIRST --threads $t" --format hdf5 --compression-level "$FIRST" --threads "$t"; done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

"$PY" - "$RESULTS" "$CASE" "${RANKS[*]:-}" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
base = {r["round"]: float(r["seconds"]) for r in rows if r["name"] == "safetensors"}
plain = {r["round"]: int(r["bytes"]) for r in rows if r["name"] == "safetensors"}
print(f"case {sys.argv[2]} {sys.argv[3]}, {len(base)} rounds (median; ratio = seconds / safetensors seconds of the same round)")
print("| output | seconds | ratio to safetensors | CPU seconds | CPU ratio | output bytes | uncompressed / output | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
cpu = {r["round"]: float(r["cpu_seconds"]) for r in rows if r["name"] == "safetensors"}
for name in dict.fromkeys(r["name"] for r in rows):
    mine = [r for r in rows if r["name"] == name]
    seconds = statistics.median(float(r["seconds"]) for r in mine)
    ratio = statistics.median(float(r["seconds"]) / base[r["round"]] for r in mine)
    size = statistics.median(int(r["bytes"]) for r in mine)
    unpacked = statistics.median(plain[r["round"]] / int(r["bytes"]) for r in mine)
    rss = statistics.median(int(r["peak_rss_kb"]) for r in mine) / 1024
    cpu_seconds = statistics.median(float(r["cpu_seconds"]) for r in mine)
    cpu_ratio = statistics.median(float(r["cpu_seconds"]) / cpu[r["round"]] for r in mine)
    print(f"| {name} | {seconds:.2f} | {ratio:.2f}x | {cpu_seconds:.2f} | {cpu_ratio:.2f}x | {size:,} | {unpacked:.3f} | {rss:.0f} |")
print()
print("per round:", ", ".join(f"{r['round']}:{r['name']}={float(r['seconds']):.2f}s" for r in rows))
EOF
