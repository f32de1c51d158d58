#!/usr/bin/env bash
# fineshard benchmark (issue 8; peak-RSS point of issue 4; verify timings of issue 5).
#
#   scripts/bench.sh [--size 1B|4B] [--with-4b] [--with-r1] [--baseline REV] [--runs N] [--no-build] [--keep] [--out FILE]
#
# One run, same machine, side by side, page cache warm, `sync` before every timed run, median of --runs:
#   * the 1B synthetic Llama checkpoint (TinyLlama shape; scripts/bench/make_llama.py, cached in
#     $FINESHARD_BENCH_DIR, default /tmp/fineshard-bench); with --size 4B or --with-4b also the ~4B one;
#   * the floor per configuration: `cp` of the output's bytes (same filesystem, same number of files)
#     while `openssl dgst -sha256` hashes that many bytes concurrently; and the same with each copied
#     file fsync'd (`sync FILE`), since fineshard syncs its output's filesystem once before the manifest;
#   * fineshard shard (--no-source-hash --no-sync, like the floor and the peer, which do not wait for the
#     disk either; output hashing on): all-DP 8 with every fine-grained size 8 (hf),
#     TP=8 (vllm layout), DP=16 with embedding 8 / lm_head 8 / o_proj 4 / MLP 2, and all-DP 8 with
#     --format hdf5;
#   * the same all-DP 8 shard from an index-sharded two-file copy of the 1B checkpoint (split at 1.2 GB);
#   * the Python peer (scripts/bench/peer.py: safe_open + get_slice + numpy) on all-DP 8, both checkpoints;
#   * verify against its floor, `openssl dgst -sha256` over the output files two at a time (one
#     process per core), and verify --source against that plus `cat` of the source (issue 17);
#   * plan on the header-only DeepSeek-R1 W8A8 checkpoint (scripts/make_deepseek_r1_headers.py,
#     136,679 tensors), DP 32 + EP, every fine-grained size 8, text output to /dev/null;
#   * --with-r1: shard rank 0 of that checkpoint (sparse input, ~27 GiB of output in 6 files) against
#     the floor for the same bytes and files (written and hashed from a warm, non-sparse file);
#   * forward-check on the all-DP 8 output (8 tokens per rank); with --baseline REV also the same
#     forward-check by REV's release build (built once into $FINESHARD_BENCH_DIR/baseline-REV), the two
#     alternated run by run (issue 17 compares against the commit before its kernel change, fc7bba4);
#   * 4B: fineshard and the peer under a 1 GiB memory limit (systemd-run cgroup if systemd runs, else
#     prlimit --as; plus an anonymous-RSS watchdog), and fineshard's peak RSS without a limit.
# Prints a table and writes docs/PERFORMANCE.md (--out to write elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZES=(1B); WITH_R1=0; BASELINE=; RUNS=3; BUILD=1; KEEP=0; DOC="$ROOT/docs/PERFORMANCE.md"; LIMIT_MIB=1024
while [ $# -gt 0 ]; do
    case "$1" in
        --size) shift; SIZES=("$1") ;;
        --with-4b) SIZES=(1B 4B) ;;
        --with-r1) WITH_R1=1 ;;
        --baseline) shift; BASELINE=$1 ;;
        --runs) shift; RUNS=$1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --out) shift; DOC=$1 ;;
        --limit-mib) shift; LIMIT_MIB=$1 ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$RUNS" -ge 1 ] || { echo "--runs must be >= 1" >&2; exit 2; }

PY=${FINESHARD_PYTHON:-$HOME/.cache/fineshard/venv/bin/python}
BENCH_DIR=${FINESHARD_BENCH_DIR:-/tmp/fineshard-bench}
export FINESHARD_BENCH_DIR=$BENCH_DIR
mkdir -p "$BENCH_DIR"
WORK=$BENCH_DIR/work; RES=$BENCH_DIR/results
rm -rf "$WORK" "$RES"; mkdir -p "$WORK" "$RES"
RESULTS=$RES/results.tsv
printf 'size\tcase\trun\tseconds\tpeak_rss_kb\tbytes\trc\tnote\n' > "$RESULTS"

if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time" >&2
    apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }
fi
if [ "$BUILD" = 1 ]; then
    swift build -c release --scratch-path .build-bench >&2
fi
BIN=$ROOT/.build-bench/release/fineshard
[ -x "$BIN" ] || { echo "no binary at $BIN (build with: swift build -c release --scratch-path .build-bench)" >&2; exit 1; }
BASE_BIN=
if [ -n "$BASELINE" ]; then
    # REV's release build, in a detached worktree kept between runs (one build per commit).
    rev=$(git rev-parse --short "$BASELINE^{commit}") || { echo "--baseline: no commit $BASELINE" >&2; exit 2; }
    bdir=$BENCH_DIR/baseline-$rev
    if [ ! -x "$bdir/.build/release/fineshard" ]; then
        [ -d "$bdir" ] || git worktree add --detach "$bdir" "$rev" >&2
        (cd "$bdir" && swift build -c release --product fineshard >&2)
    fi
    BASE_BIN=$bdir/.build/release/fineshard
    BASELINE=$rev
fi

log() { echo "[bench $(date +%T)] $*" >&2; }
now() { date +%s.%N; }
weights() { find "$1" -maxdepth 1 -type f \( -name '*.safetensors' -o -name '*.h5' \) | sort; }
bytes_of() { local t=0 s; for f in $(weights "$1"); do s=$(stat -c %s "$f"); t=$((t + s)); done; echo $t; }
warm() { cat "$@" > /dev/null; }

# timed SIZE CASE RUN BYTES-DIR -- command...   (RSS from /usr/bin/time -v; wall from date)
# BYTES-DIR: the folder whose weight files' bytes are recorded after the run ('-' for none).
timed() {
    local size=$1 case=$2 run=$3 bdir=$4; shift 5
    local tv=$RES/$size-$case-$run.time out=$RES/$size-$case-$run.out rc=0 t0 t1 rss bytes=0
    sync
    t0=$(now)
    /usr/bin/time -v -o "$tv" "$@" > "$out" 2>&1 || rc=$?
    t1=$(now)
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv" 2>/dev/null || true)
    [ "$bdir" != - ] && [ -d "$bdir" ] && bytes=$(bytes_of "$bdir")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n' "$size" "$case" "$run" "$(echo "$t1 - $t0" | bc)" "${rss:-0}" "$bytes" "$rc" >> "$RESULTS"
    [ $rc = 0 ] || log "$case run $run exited $rc (see $out)"
}

R1_ARGS="--dp 32 --enable-expert-parallel"
# Hashes files $3… on two openssl processes (halves of the list, one per core), then cats $1 unless '-'.
HASH_PAIR='src=$1; shift; h=$(( ($# + 1) / 2 ))
    openssl dgst -sha256 "${@:1:$h}" > /dev/null & a=$!
    openssl dgst -sha256 "${@:$((h + 1))}" > /dev/null & b=$!
    wait $a $b
    [ "$src" = - ] || cat $(find "$src" -maxdepth 1 -name "*.safetensors") > /dev/null'
FG8='{"finegrained_tp_config": {"embedding_tensor_parallel_size": 8, "lmhead_tensor_parallel_size": 8, "oproj_tensor_parallel_size": 8, "mlp_tensor_parallel_size": 8}}'
MIXED='{"finegrained_tp_config": {"embedding_tensor_parallel_size": 8, "lmhead_tensor_parallel_size": 8, "oproj_tensor_parallel_size": 4, "mlp_tensor_parallel_size": 2}}'
case_args() {
    case "$1" in
        dp8-fg8-hf|dp8-fg8-hf-2files) echo "--dp 8 --layout hf" ;;
        tp8-vllm)     echo "--dp 1 --tp 8 --layout vllm" ;;
        dp16-mixed)   echo "--dp 16 --layout hf" ;;
        dp8-fg8-hdf5) echo "--dp 8 --layout hf --format hdf5" ;;
    esac
}
case_config() {
    case "$1" in dp8-fg8-hf|dp8-fg8-hf-2files|dp8-fg8-hdf5) echo "$FG8" ;; dp16-mixed) echo "$MIXED" ;; *) echo '{}' ;; esac
}

# Floor for N bytes in K files: K sequential `cp` of a warm file of N/K bytes (coreutils cp uses
# copy_file_range) while `openssl dgst -sha256` hashes the same N bytes concurrently. K equals the
# output's file count, so the floor writes the same bytes in the same number of files and its source
# (N/K bytes) stays in the page cache even when N is large (DP=16 writes ~8x the checkpoint).
floor_run() {  # size case run bytes files [fsync]
    local size=$1 case=$2 run=$3 n=$4 k=$5 fsync=${6:-0} src=$WORK/floor-src dst=$WORK/floor-out
    local per=$(( (n + k - 1) / k ))
    if [ ! -f "$src" ] || [ "$(stat -c %s "$src")" != "$per" ]; then
        rm -f "$src"
        # Real checkpoint bytes (not zeros: no sparse-file shortcuts), repeated as needed.
        local ck reps; ck=$(weights "$CKPT" | head -1)
        reps=$(( per / $(stat -c %s "$ck") + 1 ))
        for ((i = 0; i < reps; i++)); do cat "$ck"; done 2>/dev/null | head -c "$per" > "$src" || true
    fi
    warm "$src"
    rm -rf "$dst"; mkdir -p "$dst"
    local files=(); for ((i = 0; i < k; i++)); do files+=("$src"); done
    timed "$size" "$case" "$run" "$dst" -- bash -c '
        src=$1; dst=$2; k=$3; fsync=$4; shift 4
        openssl dgst -sha256 "$@" > /dev/null & h=$!
        for ((i = 0; i < k; i++)); do
            cp "$src" "$dst/part-$i.safetensors"
            [ "$fsync" = 0 ] || sync "$dst/part-$i.safetensors"
        done
        wait $h' floor "$src" "$dst" "$k" "$fsync" "${files[@]}"
    rm -rf "$dst"
}

shard_run() {  # size case run [extra args...]
    local size=$1 case=$2 run=$3; shift 3
    local out=$WORK/out-$case
    rm -rf "$out"
    warm $(weights "$CKPT")
    # shellcheck disable=SC2046
    timed "$size" "$case" "$run" "$out" -- "$BIN" shard "$CKPT" -o "$out" $(case_args "$case") \
        --additional-config "$(case_config "$case")" --no-source-hash --no-sync --quiet --json "$@"
}

detect_limiter() {
    if command -v systemd-run >/dev/null && [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ] \
        && systemd-run --quiet --scope -p MemoryMax=64M true >/dev/null 2>&1; then
        echo systemd-run
    elif command -v prlimit >/dev/null; then
        echo prlimit
    else
        echo none
    fi
}

limited_run() {  # size case run outdir -- cmd...
    local size=$1 case=$2 run=$3 out=$4; shift 5
    case "$LIMITER" in
        systemd-run) timed "$size" "$case" "$run" "$out" -- systemd-run --quiet --scope -p MemoryMax=${LIMIT_MIB}M -p MemorySwapMax=0 "$@" ;;
        prlimit) timed "$size" "$case" "$run" "$out" -- prlimit --as=$((LIMIT_MIB * 1024 * 1024)) "$@" ;;
        none) log "no memory limiter available"; printf '%s\t%s\t%s\t0\t0\t0\t-1\tno limiter\n' "$size" "$case" "$run" >> "$RESULTS" ;;
    esac
}

MACHINE=$RES/machine.txt
{
    echo "cpu=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')"
    echo "cores=$(nproc)"
    echo "memory=$(free -h | awk '/^Mem:/ {print $2}')"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release; echo "$PRETTY_NAME")"
    echo "disk_free=$(df -h "$BENCH_DIR" | awk 'NR==2 {print $4 " free of " $2 " (" $1 ", " $6 ")"}')"
    echo "fs=$(findmnt -no FSTYPE -T "$BENCH_DIR" 2>/dev/null || stat -f -c %T "$BENCH_DIR")"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "swift=$(swift --version 2>&1 | head -1)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet -- Sources || echo ' (Sources modified)')"
    echo "runs=$RUNS"
    [ -z "$BASELINE" ] || echo "baseline=$BASELINE"
} > "$MACHINE"
LIMITER=$(detect_limiter)
echo "limiter=$LIMITER" >> "$MACHINE"

for SIZE in "${SIZES[@]}"; do
    log "checkpoint $SIZE"
    CKPT=$("$PY" scripts/bench/make_llama.py --size "$SIZE")
    echo "ckpt_$SIZE=$CKPT bytes=$(bytes_of "$CKPT") files=$(weights "$CKPT" | wc -l)" >> "$MACHINE"
    warm $(weights "$CKPT")

    if [ "$SIZE" = 1B ]; then
        CASES=(dp8-fg8-hf tp8-vllm dp16-mixed dp8-fg8-hdf5)
        for c in "${CASES[@]}"; do
            for ((r = 1; r <= RUNS; r++)); do log "$SIZE shard $c run $r"; shard_run "$SIZE" "$c" "$r"; done
            out=$WORK/out-$c
            echo "files_$c=$(weights "$out" | wc -l) bytes_$c=$(bytes_of "$out")" >> "$MACHINE"
            if [ "$c" = dp8-fg8-hf ]; then
                # verify / verify --source on this output vs cat of the same bytes.
                for ((r = 1; r <= RUNS; r++)); do
                    log "$SIZE verify run $r"
                    warm $(weights "$CKPT") $(weights "$out")
                    timed "$SIZE" verify "$r" - -- "$BIN" verify "$out" --json
                    # shellcheck disable=SC2046
                    timed "$SIZE" floor-verify "$r" - -- bash -c "$HASH_PAIR" hash - $(weights "$out")
                    timed "$SIZE" verify-source "$r" - -- "$BIN" verify "$out" --source "$CKPT" --json
                    # shellcheck disable=SC2046
                    timed "$SIZE" floor-verify-source "$r" - -- bash -c "$HASH_PAIR" hash "$CKPT" $(weights "$out")
                    log "$SIZE forward-check run $r"
                    timed "$SIZE" forward-check "$r" - -- "$BIN" forward-check "$out" --source "$CKPT" --tokens-per-rank 8 --json
                    [ -z "$BASE_BIN" ] || timed "$SIZE" forward-check-baseline "$r" - -- "$BASE_BIN" forward-check "$out" --source "$CKPT" --tokens-per-rank 8 --json
                done
            fi
            [ "$c" = dp8-fg8-hdf5 ] || { n=$(bytes_of "$out"); k=$(weights "$out" | wc -l); rm -rf "$out"
                for ((r = 1; r <= RUNS; r++)); do log "$SIZE floor for $c run $r"; floor_run "$SIZE" "floor-$c" "$r" "$n" "$k"
                    log "$SIZE floor+fsync for $c run $r"; floor_run "$SIZE" "floorfsync-$c" "$r" "$n" "$k" 1; done; }
            rm -rf "$out"
        done
        for ((r = 1; r <= RUNS; r++)); do
            log "$SIZE peer run $r"
            rm -rf "$WORK/out-peer"; warm $(weights "$CKPT")
            timed "$SIZE" peer-dp8-fg8-hf "$r" "$WORK/out-peer" -- "$PY" scripts/bench/peer.py "$CKPT" -o "$WORK/out-peer"
        done
        rm -rf "$WORK/out-peer"
        # The same all-DP 8 shard from an index-sharded two-file checkpoint (issue 17): fineshard, its
        # floor (same bytes, same files) and the peer, interleaved run by run.
        log "$SIZE two-file checkpoint"
        ONE=$CKPT
        CKPT=$("$PY" scripts/bench/make_llama.py --size "$SIZE" --max-shard-size 1.2e9)
        echo "ckpt_${SIZE}_2files=$CKPT bytes=$(bytes_of "$CKPT") files=$(weights "$CKPT" | wc -l)" >> "$MACHINE"
        for ((r = 1; r <= RUNS; r++)); do
            log "$SIZE shard dp8-fg8-hf (two files) run $r"
            shard_run "$SIZE" dp8-fg8-hf-2files "$r"
            n=$(bytes_of "$WORK/out-dp8-fg8-hf-2files"); k=$(weights "$WORK/out-dp8-fg8-hf-2files" | wc -l)
            rm -rf "$WORK/out-dp8-fg8-hf-2files"
            floor_run "$SIZE" floor-dp8-fg8-hf-2files "$r" "$n" "$k"
            rm -rf "$WORK/out-peer"; warm $(weights "$CKPT")
            timed "$SIZE" peer-dp8-fg8-hf-2files "$r" "$WORK/out-peer" -- "$PY" scripts/bench/peer.py "$CKPT" -o "$WORK/out-peer"
            rm -rf "$WORK/out-peer"
        done
        CKPT=$ONE

        # plan on the header-only DeepSeek-R1 checkpoint (issue 17): the whole process, warm.
        R1=$BENCH_DIR/deepseek-r1-headers
        [ -f "$R1/config.json" ] || python3 scripts/make_deepseek_r1_headers.py "$R1" >&2
        cat "$R1"/*.json > /dev/null; "$BIN" plan "$R1" $R1_ARGS --additional-config "$FG8" > /dev/null
        for ((r = 1; r <= RUNS; r++)); do
            log "plan DeepSeek-R1 run $r"
            timed R1 plan "$r" - -- sh -c '"$@" > /dev/null' plan "$BIN" plan "$R1" $R1_ARGS --additional-config "$FG8"
        done
        if [ "$WITH_R1" = 1 ]; then
            # Rank 0 of DP 32 + EP, every fine-grained size 8, from the sparse header-only checkpoint:
            # its holes read as zeros without touching the disk; the floor copies real bytes.
            out=$WORK/out-r1
            log "shard DeepSeek-R1 rank 0"
            rm -rf "$out"
            timed R1 shard-rank0 1 "$out" -- "$BIN" shard "$R1" -o "$out" $R1_ARGS --additional-config "$FG8" --ranks 0 \
                --no-source-hash --no-sync --quiet --json
            n=$(bytes_of "$out"); k=$(weights "$out" | wc -l)
            echo "files_R1_rank0=$k bytes_R1_rank0=$n" >> "$MACHINE"
            rm -rf "$out"
            log "floor for DeepSeek-R1 rank 0"
            floor_run R1 floor-shard-rank0 1 "$n" "$k"
            rm -f "$WORK/floor-src"
        fi
    else
        # Large checkpoint: peak RSS without a limit (issue 4), then both tools under the memory limit.
        c=dp8-fg8-hf
        for ((r = 1; r <= RUNS; r++)); do log "$SIZE shard $c run $r"; shard_run "$SIZE" "$c" "$r"; done
        out=$WORK/out-$c
        echo "files_${SIZE}_$c=$(weights "$out" | wc -l) bytes_${SIZE}_$c=$(bytes_of "$out")" >> "$MACHINE"
        n=$(bytes_of "$out"); k=$(weights "$out" | wc -l); rm -rf "$out"
        log "$SIZE floor"; floor_run "$SIZE" "floor-$c" 1 "$n" "$k"; floor_run "$SIZE" "floorfsync-$c" 1 "$n" "$k" 1
        log "$SIZE fineshard under ${LIMIT_MIB} MiB ($LIMITER)"
        rm -rf "$out"; warm $(weights "$CKPT")
        # shellcheck disable=SC2046
        limited_run "$SIZE" "limit-$c" 1 "$out" -- "$BIN" shard "$CKPT" -o "$out" $(case_args "$c") \
            --additional-config "$(case_config "$c")" --no-source-hash --no-sync --quiet --json
        rm -rf "$out"
        log "$SIZE peer under ${LIMIT_MIB} MiB ($LIMITER)"
        limited_run "$SIZE" "limit-peer-$c" 1 "$WORK/out-peer" -- "$PY" scripts/bench/peer.py "$CKPT" -o "$WORK/out-peer"
        rm -rf "$WORK/out-peer"
        # Anonymous-memory watchdog: what a memory cgroup could not reclaim (page cache and clean file
        # mappings are reclaimable; anonymous memory is not). Kills at the limit.
        for tool in fineshard peer; do
            log "$SIZE $tool under the anonymous-RSS watchdog"
            rm -rf "$WORK/out-wd"; warm $(weights "$CKPT")
            if [ $tool = fineshard ]; then
                # shellcheck disable=SC2046
                cmd=("$BIN" shard "$CKPT" -o "$WORK/out-wd" $(case_args "$c") --additional-config "$(case_config "$c")" --no-source-hash --no-sync --quiet --json)
            else
                cmd=("$PY" scripts/bench/peer.py "$CKPT" -o "$WORK/out-wd")
            fi
            timed "$SIZE" "watchdog-$tool-$c" 1 "$WORK/out-wd" -- "$PY" scripts/bench/memwatch.py --limit-mib "$LIMIT_MIB" -- "${cmd[@]}"
            rm -rf "$WORK/out-wd"
        done
    fi
done

rm -f "$WORK/floor-src"
[ "$KEEP" = 1 ] || rm -rf "$WORK"
"$PY" scripts/bench/report.py "$RES" --doc "$DOC"
