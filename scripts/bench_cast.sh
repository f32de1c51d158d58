#!/usr/bin/env bash
# What `shard --dtype bf16` costs (issue 18): shard time with and without the cast, same output bytes.
#
#   scripts/bench_cast.sh [--runs N] [--layers L] [--tp N] [--threads N] [--out DIR] [--no-build] [--keep]
#
# scripts/bench/make_fp8_blocks.py writes (once, cached in $FINESHARD_BENCH_DIR, default /tmp/fineshard-cast-bench)
# a DeepSeek-V3-shaped FP8-block checkpoint of L dense layers (≈1.2B parameters for L = 2) and its BF16 twin
# (same tensors, FP8 weights as BF16, no scales). Then, page cache warm, `sync` before each run, --runs
# times each, alternating:
#   copy  fineshard shard bf16/           (the same output bytes, plain copies)
#   cast  fineshard shard fp8/ --dtype bf16  (dequantized while sharding)
#   fp8   fineshard shard fp8/            (FP8 kept: half the output bytes; for reference)
# all with --tp N (2) --no-source-hash --no-sync, output hashing on. Prints per-run seconds and peak RSS,
# the medians, the cast's overhead over the copy, and the load average before and after. --out puts the
# shard output elsewhere (e.g. /dev/shm, to take the disk's writeback out of the comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5; LAYERS=2; TP=2; THREADS=""; BUILD=1; KEEP=0; OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) shift; RUNS=$1 ;;
        --layers) shift; LAYERS=$1 ;;
        --tp) shift; TP=$1 ;;
        --threads) shift; THREADS="--threads $1" ;;
        --out) shift; OUT=$1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
DIR=${FINESHARD_BENCH_DIR:-/tmp/fineshard-cast-bench}
PY=${FINESHARD_PYTHON:-python3}
[ "$BUILD" = 1 ] && swift build -c release >&2
BIN="$(swift build -c release --show-bin-path)/fineshard"
"$PY" scripts/bench/make_fp8_blocks.py "$DIR" --layers "$LAYERS" >/dev/null
OUT=${OUT:-$DIR/out}

run() {  # name, source, extra options… → "seconds peak_rss bytes_written"
    local name=$1 src=$2; shift 2
    rm -rf "$OUT"; sync
    "$BIN" shard "$src" -o "$OUT" --tp "$TP" --no-source-hash --no-sync --quiet --json $THREADS "$@" |
        "$PY" -c 'import json,sys; s=json.load(sys.stdin); print("%.3f %d %d" % (s["seconds"], s["peak_rss_bytes"], s["bytes_written"]))'
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# One warm-up of each, so both sources are in the page cache.
run copy "$DIR/bf16" >/dev/null; run cast "$DIR/fp8" --dtype bf16 >/dev/null
declare -A TIMES
for i in $(seq "$RUNS"); do
    for kind in copy cast fp8; do
        case $kind in
            copy) r=$(run copy "$DIR/bf16") ;;
            cast) r=$(run cast "$DIR/fp8" --dtype bf16) ;;
            fp8) r=$(run fp8 "$DIR/fp8") ;;
        esac
        read -r s rss bytes <<<"$r"
        printf '%-5s run %d: %7.3f s  %6.0f MiB peak RSS  %6.0f MiB written\n' "$kind" "$i" "$s" "$((rss / 1048576))" "$((bytes / 1048576))"
        TIMES[$kind]="${TIMES[$kind]:-} $s"
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "${TIMES[copy]}" "${TIMES[cast]}" "${TIMES[fp8]}" <<'EOF'
import statistics, sys
copy, cast, fp8 = (statistics.median(map(float, a.split())) for a in sys.argv[1:])
print(f"median: copy {copy:.3f} s, cast {cast:.3f} s, fp8 kept {fp8:.3f} s; cast overhead over copy {100 * (cast / copy - 1):+.1f} %")
EOF
[ "$KEEP" = 1 ] || rm -rf "$OUT"
