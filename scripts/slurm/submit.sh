#!/usr/bin/env bash
# Shard a checkpoint as a Slurm job array: N tasks, each writing one contiguous block of ranks
# (`fineshard shard --ranks`), then a dependent merge job (--dependency=afterany, so it runs even when
# a task failed) that checks every rank is present, combines the partial manifests into
# OUT/manifest.json and verifies the union (against the source unless --no-source-check).
#
# Usage:
#   scripts/slurm/submit.sh --source CKPT --out OUT --tasks N [--fineshard BIN] \
#       --dp N [--tp N] [--additional-config JSON|@FILE] [--layout hf|vllm] [--format safetensors|hdf5] \
#       [--enable-expert-parallel] [--vocab-padding N] [--file-pattern P] [--max-file-size S] [--strict] \
#       [--compression-level N] [--max-tensors N] [--memory-budget S] \
#       [--partition P] [--time T] [--cpus-per-task N] [--mem M] [--sbatch-arg ARG]... \
#       [--no-source-check] [--only-tasks 1,3] [--dry-run]
#
# How the work splits: the plan has W = DP × TP ranks (`fineshard plan --json` → world_size). Task i of
# N writes the contiguous block of ranks [i·q + min(i, r), …] of q or q + 1 ranks (q = W / N, r = W mod N):
# the first r tasks get one rank more. Uneven blocks are allowed (ranks of one plan usually have about the
# same bytes); more tasks than ranks is refused (exit 2), since a task would have nothing to write.
#
# --only-tasks LIST resubmits some tasks of an earlier submission (same options, same --tasks) and a new
# merge job; the merge step prints this command, with the tasks to resubmit, when ranks are missing.
# Every task runs `shard --resume`, so a resubmitted task keeps the ranks it had finished.
#
# Needs: sbatch on the PATH; SOURCE, OUT and BIN at the same paths on every node (a shared filesystem).
# Prints `array_job_id=…` and `merge_job_id=…` on stdout (the rest goes to stderr).
# Logs and per-task summaries: OUT/.fineshard/slurm/ (task-<id>.log, task-<id>.json, merge-<jobid>.log).
# Exit: 0 submitted, 2 bad options or a plan fineshard rejects, 3 sbatch failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prog="fineshard-submit"
die() { echo "$prog: error: $*" >&2; exit 2; }

source="" out="" tasks="" bin="" only="" dry=0 source_check=1
parallel=() sbatch_common=()
original_args=("$@")

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --source) need_value "$@"; source="$2"; shift 2 ;;
        --out|-o) need_value "$@"; out="$2"; shift 2 ;;
        --tasks) need_value "$@"; tasks="$2"; shift 2 ;;
        --fineshard) need_value "$@"; bin="$2"; shift 2 ;;
        --only-tasks) need_value "$@"; only="$2"; shift 2 ;;
        --dry-run) dry=1; shift ;;
        --no-source-check) source_check=0; shift ;;
        --additional-config)
            need_value "$@"
            value="$2"
            # @FILE is read by every task: make it absolute, so the tasks' working folder does not matter.
            if [[ "$value" == @* ]]; then
                file="${value#@}"
                [ -f "$file" ] || die "--additional-config: $file does not exist"
                value="@$(cd "$(dirname "$file")" && pwd)/$(basename "$file")"
            fi
            parallel+=("$1" "$value"); shift 2 ;;
        --dp|--tp|--layout|--format|--vocab-padding|--file-pattern|--max-file-size|--compression-level|--max-tensors|--memory-budget)
            need_value "$@"; parallel+=("$1" "$2"); shift 2 ;;
        --enable-expert-parallel|--strict) parallel+=("$1"); shift ;;
        --partition|--time|--cpus-per-task|--mem|--account|--qos)
            need_value "$@"; sbatch_common+=("$1=$2"); shift 2 ;;
        --sbatch-arg) need_value "$@"; sbatch_common+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[ -n "$source" ] || die "--source CKPT is required"
[ -n "$out" ] || die "--out OUT is required"
[ -n "$tasks" ] || die "--tasks N is required"
[[ "$tasks" =~ ^[0-9]+$ ]] && [ "$tasks" -ge 1 ] || die "--tasks must be a whole number ≥ 1, not '$tasks'"
printf '%s\n' "${parallel[@]}" | grep -qx -- --dp || die "--dp N is required (the parallel configuration)"
[ -e "$source" ] || die "--source: $source does not exist"

[ -n "$bin" ] || bin=fineshard
if [[ "$bin" != */* ]]; then
    resolved="$(command -v "$bin" || true)"
    [ -n "$resolved" ] || die "no $bin on the PATH; pass --fineshard BIN"
    bin="$resolved"
fi
[ -f "$bin" ] && [ -x "$bin" ] || die "--fineshard: $bin is not an executable file"
abs() { local d; d="$(cd "$(dirname "$1")" && pwd)" || return 1; printf '%s/%s\n' "$d" "$(basename "$1")"; }
bin="$(abs "$bin")"
source="$(abs "$source")"
[ -d "$(dirname "$out")" ] || die "--out: the folder $(dirname "$out") does not exist"
out="$(abs "$out")"

# The world size, from the same plan every task will make (headers only; exit 2 names what is wrong).
plan_err="$(mktemp)"
trap 'rm -f "$plan_err"' EXIT
if ! plan_json="$("$bin" plan "$source" "${parallel[@]}" --json 2>"$plan_err")"; then
    cat "$plan_err" >&2
    die "fineshard plan rejected this configuration (see above); nothing submitted"
fi
world="$(printf '%s\n' "$plan_json" | sed -n 's/^ *"world_size" *: *\([0-9][0-9]*\).*/\1/p' | head -n 1)"
[[ "$world" =~ ^[0-9]+$ ]] && [ "$world" -ge 1 ] || die "could not read world_size from 'fineshard plan --json'"

if [ "$tasks" -gt "$world" ]; then
    die "--tasks $tasks is more than the $world ranks of this plan: a task would have no rank to write; use --tasks $world or fewer"
fi

block_of() { # TASK TASKS WORLD → "FIRST LAST"
    local id=$1 t=$2 w=$3 q r first n
    q=$((w / t)); r=$((w % t))
    first=$((id * q + (id < r ? id : r))); n=$((q + (id < r ? 1 : 0)))
    echo "$first $((first + n - 1))"
}

# The tasks to submit: all, or a resubmission of some.
if [ -n "$only" ]; then
    [[ "$only" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--only-tasks takes task ids like 1,3 (not '$only')"
    for id in ${only//,/ }; do
        [ "$id" -lt "$tasks" ] || die "--only-tasks: task $id does not exist (tasks are 0-$((tasks - 1)))"
    done
    array="$only"
else
    array="0-$((tasks - 1))"
fi

q=$((world / tasks)); r=$((world % tasks))
if [ "$r" -eq 0 ]; then
    echo "$prog: $world ranks in $tasks task(s) of $q rank(s)" >&2
else
    echo "$prog: $world ranks in $tasks tasks: $r of $((q + 1)) ranks, $((tasks - r)) of $q (uneven blocks)" >&2
fi
for ((id = 0; id < tasks; id++)); do
    if [ "$tasks" -gt 12 ] && [ "$id" -ge 3 ] && [ "$id" -lt $((tasks - 2)) ]; then
        [ "$id" -ne 3 ] || echo "$prog:   …" >&2
        continue
    fi
    read -r first last <<<"$(block_of "$id" "$tasks" "$world")"
    echo "$prog:   task $id: ranks $first-$last" >&2
done

logs="$out/.fineshard/slurm"

# The command that resubmits tasks, for the merge step's message (without any earlier --only-tasks).
resubmit=("$here/submit.sh")
skip=0
for a in "${original_args[@]}"; do
    if [ "$skip" -eq 1 ]; then skip=0; continue; fi
    case "$a" in --only-tasks) skip=1; continue ;; --dry-run) continue ;; esac
    resubmit+=("$a")
done
resubmit_text="cd $(printf %q "$PWD") && $(printf "%q " "${resubmit[@]}")"

common=(--source "$source" --out "$out" --tasks "$tasks" --world-size "$world" --fineshard "$bin")
array_cmd=(sbatch --parsable --array="$array" --job-name=fineshard-shard --chdir="$PWD"
    --output="$logs/task-%a.log" --open-mode=append "${sbatch_common[@]}"
    "$here/fineshard-array.sbatch" "${common[@]}" -- "${parallel[@]}")
merge_args=("${common[@]}" --resubmit-command "$resubmit_text")
[ "$source_check" -eq 1 ] || merge_args+=(--no-source-check)
merge_command() { # ARRAY_JOB_ID
    merge_cmd=(sbatch --parsable --job-name=fineshard-merge --chdir="$PWD"
        --output="$logs/merge-%j.log" "${sbatch_common[@]}" --dependency="afterany:$1"
        "$here/fineshard-merge.sbatch" "${merge_args[@]}")
}

if [ "$dry" -eq 1 ]; then
    echo "$prog: dry run; would submit:" >&2
    merge_command '<array job id>'
    printf '%q ' "${array_cmd[@]}"; echo
    printf '%q ' "${merge_cmd[@]}"; echo
    exit 0
fi

command -v sbatch >/dev/null || { echo "$prog: error: sbatch is not on the PATH" >&2; exit 3; }
mkdir -p "$logs" || die "--out: cannot create $logs"
array_id="$("${array_cmd[@]}")" || { echo "$prog: error: sbatch of the array failed" >&2; exit 3; }
array_id="${array_id%%;*}"
merge_command "$array_id"
if ! merge_id="$("${merge_cmd[@]}")"; then
    echo "$prog: error: sbatch of the merge job failed; the array job $array_id is submitted (scancel $array_id to drop it)" >&2
    exit 3
fi
merge_id="${merge_id%%;*}"
echo "$prog: array job $array_id (tasks $array of 0-$((tasks - 1))), merge job $merge_id (afterany:$array_id); logs in $logs" >&2
echo "array_job_id=$array_id"
echo "merge_job_id=$merge_id"
