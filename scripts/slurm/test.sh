#!/usr/bin/env bash
# The Slurm recipe against a real Slurm: starts a single-node cluster on localhost in a temporary
# folder (munged, slurmctld, slurmd in the foreground of background jobs, their PIDs kept), submits
# scripts/slurm/submit.sh for fixtures/tiny-llama and all-MiniLM-L6-v2 with several array sizes, and
# checks:
#   - every merge step completes and `fineshard verify --source` passes on the union of the partial
#     manifests and on the combined manifest.json; the files equal a single-process `shard` run's;
#   - each task's bytes_read (its --json summary: source tensor data, headers excluded) equals the
#     bytes of its ranks' manifest pieces exactly, a piece replicated in several files counted once;
#   - submit.sh refuses more tasks than ranks (exit 2) and a bad plan;
#   - a failing task (FINESHARD_FAULT=piece:1:kill) and a cancelled one (scancel while it writes: SIGTERM)
#     leave the merge step failing with a message naming the missing ranks; the cancelled task leaves no
#     *.fineshard-tmp file; resubmitting those tasks and the merge completes and verifies.
# Tears the cluster down by PID on exit. Prints PASS/FAIL lines and a summary; exits 1 on any failure.
#
# Usage (as root, on Debian 12; installs slurmctld slurmd slurm-client munge strace when missing):
#   scripts/slurm/test.sh [--fineshard BIN] [--minilm DIR] [--keep]
# BIN defaults to $FINESHARD_BIN, else `swift build -c release` in the repository (its bin path; a debug
# build works too but its verify/shard make the test ~8× slower);
# DIR to $FINESHARD_MINILM, else scripts/fetch_minilm.sh. --keep leaves the temporary folder.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/scripts/slurm"
t_start=$(date +%s%N)
seconds_since() { local ms=$((($(date +%s%N) - $1) / 1000000)); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }
elapsed() { seconds_since "$t_start"; }
log() { echo "[$(elapsed)s] $*" >&2; }
die() { echo "slurm-test: error: $*" >&2; exit 2; }

bin="${FINESHARD_BIN:-}" minilm="${FINESHARD_MINILM:-}" keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --fineshard) bin="${2:?}"; shift 2 ;;
        --minilm) minilm="${2:?}"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done

passes=0 failures=()
pass() { passes=$((passes + 1)); echo "PASS: $*"; }
fail() { failures+=("$*"); echo "FAIL: $*"; }

[ "$(id -u)" -eq 0 ] || die "run as root: the test starts munged, slurmctld and slurmd"
python="${FINESHARD_PYTHON:-python3}"
command -v "$python" >/dev/null || die "python3 is needed (to read the JSON summaries and manifests)"

# --- Slurm and munge, from Debian, when missing ------------------------------------------------------
missing=()
for pkg in slurmctld slurmd slurm-client munge strace; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

# --- fineshard and the checkpoints -------------------------------------------------------------------
if [ -z "$bin" ]; then
    log "building fineshard (swift build -c release)"
    (cd "$root" && swift build -c release >&2)
    bin="$(cd "$root" && swift build -c release --show-bin-path)/fineshard"
fi
[ -x "$bin" ] || die "fineshard binary $bin is not executable"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
if [ -z "$minilm" ]; then
    minilm="$(bash "$root/scripts/fetch_minilm.sh")"
fi
[ -f "$minilm/model.safetensors" ] || die "no model.safetensors in $minilm"
tiny="$root/fixtures/tiny-llama"

# --- a single-node cluster in a temporary folder -----------------------------------------------------
tmp="$(mktemp -d /tmp/fineshard-slurm.XXXXXX)"
chmod 755 "$tmp"
pids=()
jobs_submitted=()
cleanup() {
    local rc=$?
    set +e
    if [ ${#jobs_submitted[@]} -gt 0 ] && [ -n "${SLURM_CONF:-}" ]; then
        scancel "${jobs_submitted[@]}" >/dev/null 2>&1
        sleep 1
    fi
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$keep" -eq 1 ]; then echo "slurm-test: kept $tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ctld_port=$((20000 + RANDOM % 20000))
while ! port_free "$ctld_port" || ! port_free $((ctld_port + 1)); do ctld_port=$((20000 + RANDOM % 20000)); done
node="fsnode"
cpus=4

mkdir -p "$tmp/munge" "$tmp/etc" "$tmp/state" "$tmp/spool" "$tmp/log" "$tmp/run"
chmod 755 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$tmp/munge/munge.key"
cat >"$tmp/etc/slurm.conf" <<EOF
ClusterName=fineshardtest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$((ctld_port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool/%n
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd-%n.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=1
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=10
MinJobAge=600
NodeName=$node NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
export SLURM_CONF="$tmp/etc/slurm.conf"

t_cluster=$(date +%s%N)
log "starting munged, slurmctld, slurmd in $tmp (ports $ctld_port, $((ctld_port + 1)))"
munged -F --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.socket.2" \
    --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/munged.seed" \
    >"$tmp/log/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$tmp/munge/munge.socket.2" ] && break; sleep 0.05; done
[ -S "$tmp/munge/munge.socket.2" ] || { cat "$tmp/log/munged.out" "$tmp/log/munged.log" >&2 2>/dev/null; die "munged did not start"; }
slurmctld -D -i -f "$SLURM_CONF" >"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N "$node" -f "$SLURM_CONF" >"$tmp/log/slurmd.out" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 300); do
    state="$(sinfo -h -n "$node" -o %T 2>/dev/null || true)"
    [ "$state" = "idle" ] && break
    sleep 0.1
done
if [ "$state" != "idle" ]; then
    tail -n 20 "$tmp/log/slurmctld.log" "$tmp/log/slurmd-$node.log" "$tmp/log/"*.out >&2 2>/dev/null
    die "the node did not come up (state '$state')"
fi
log "cluster up: node $node idle ($(sinfo --version))"

# --- helpers -------------------------------------------------------------------------------------------
# submit NAME ARGS… → sets ARRAY_ID and MERGE_ID; records the ids for teardown
submit() {
    local name=$1 out
    shift
    out="$("$here/submit.sh" "$@" 2>>"$tmp/log/submit-$name.err")" || { cat "$tmp/log/submit-$name.err" >&2; return 1; }
    ARRAY_ID="$(sed -n 's/^array_job_id=//p' <<<"$out")"
    MERGE_ID="$(sed -n 's/^merge_job_id=//p' <<<"$out")"
    jobs_submitted+=("$ARRAY_ID" "$MERGE_ID")
}

# wait_gone TIMEOUT JOBID… : polls squeue until none of the jobs is pending or running
wait_gone() {
    local timeout=$1 deadline
    shift
    deadline=$(($(date +%s) + timeout))
    local ids
    ids="$(IFS=,; echo "$*")"
    local queued
    while ! queued="$(squeue -h -j "$ids" -t PD,R,CG,CF,S 2>&1)" || [ -n "$queued" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { log "timeout waiting for jobs $ids"; squeue >&2; return 1; }
        sleep 0.2
    done
}

# job_field JOBID FIELD → e.g. JobState / ExitCode, from scontrol (no accounting needed)
job_field() { scontrol -o show job "$1" 2>/dev/null | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# check_bytes OUT LABEL SOURCE: every task's bytes_read against its partial manifest's pieces
check_bytes() {
    local out=$1 label=$2 src=$3
    "$python" - "$out" "$label" "$src" <<'EOF' >>"$tmp/bytes.txt"
import glob, json, os, struct, sys
out, label = sys.argv[1], sys.argv[2]
size = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
        "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
partials = {os.path.basename(p): p for p in glob.glob(os.path.join(out, "manifest.ranks-*.json"))}
status = 0
for summary in sorted(glob.glob(os.path.join(out, ".fineshard/slurm/task-*.json"))):
    if summary.endswith(".failed.json"):
        continue
    task = os.path.basename(summary)[len("task-"):-len(".json")]
    s = json.load(open(summary))
    ranks = s["ranks_written"]
    if s.get("ranks_skipped"):
        print(f"{label} task {task}: ranks {ranks} written, {s['ranks_skipped']} skipped (resumed): not compared")
        continue
    name = f"manifest.ranks-{min(ranks)}-{max(ranks)}.json"
    m = json.load(open(partials[name]))
    # shard reads a replicated piece once per run: files with the same tensor list form a group (in
    # chunks of 64 files), and within it each tensor's distinct (dtype, shape, pieces) is read once.
    jobs = []
    for r in sorted(m["ranks"], key=lambda r: r["rank"]):
        for f in r["files"]:
            tensors = {t["name"]: t for t in r["tensors"] if t["file"] == f["name"]}
            jobs.append(tensors)
    groups = {}
    for i, tensors in enumerate(jobs):
        key = tuple(sorted((t["name"], t["dtype"], tuple(t["shape"])) for t in tensors.values()))
        groups.setdefault(key, []).append(i)
    pieces = 0
    for members in groups.values():
        for c in range(0, len(members), 64):
            chunk = members[c:c + 64]
            for name in jobs[chunk[0]]:
                seen = set()
                for i in chunk:
                    t = jobs[i][name]
                    content = json.dumps([t["dtype"], t["shape"], t["pieces"]], sort_keys=True)
                    if content in seen:
                        continue
                    seen.add(content)
                    for p in t["pieces"]:
                        if "source" not in p:
                            continue
                        n = 1
                        for a, b in p["ranges"]:
                            n *= b - a
                        pieces += n * size[t["dtype"]]
    got = s["bytes_read"]
    # bytes_read counts source tensor data only (headers excluded): exactly the distinct pieces' bytes.
    ok = got == pieces
    status |= not ok
    print(f"{label} task {task}: ranks {min(ranks)}-{max(ranks)}: bytes_read {got}, plan's pieces {pieces}: "
          f"{'ok' if ok else 'MISMATCH'}")
sys.exit(status)
EOF
}

# the files of OUT equal a single-process shard of the same configuration
check_same_as_single() {
    local out=$1 src=$2
    shift 2
    local ref="$tmp/ref-$(basename "$out")"
    "$bin" shard "$src" -o "$ref" "$@" --quiet >/dev/null
    "$python" - "$out/manifest.json" "$ref/manifest.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
files = lambda m: sorted((f["name"], f["sha256"]) for r in m["ranks"] for f in r["files"])
sys.exit(0 if files(a) == files(b) and a["plan_fingerprint"] == b["plan_fingerprint"] else 1)
EOF
}

no_tmp_files() { [ -z "$(find "$1" -name '*.fineshard-tmp' -print -quit)" ]; }

fg_tiny='{"finegrained_tp_config": {"embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 2, "oproj_tensor_parallel_size": 2, "mlp_tensor_parallel_size": 4}}'
fg_minilm='{"finegrained_tp_config": {"embedding_tensor_parallel_size": 4, "oproj_tensor_parallel_size": 2, "mlp_tensor_parallel_size": 4}}'

# --- submit.sh refuses what it cannot split --------------------------------------------------------------
rc=0; "$here/submit.sh" --source "$tiny" --out "$tmp/refused" --tasks 5 --fineshard "$bin" --dp 4 \
    >/dev/null 2>"$tmp/log/refuse-tasks.err" || rc=$?
if [ "$rc" -eq 2 ] && grep -q "more than the 4 ranks" "$tmp/log/refuse-tasks.err" && [ -z "$(squeue -h)" ]; then
    pass "submit.sh refuses 5 tasks for 4 ranks (exit 2, nothing submitted): $(sed -n 's/.*error: //p' "$tmp/log/refuse-tasks.err")"
else
    fail "submit.sh --tasks 5 for 4 ranks: exit $rc, $(cat "$tmp/log/refuse-tasks.err")"
fi
rc=0; "$here/submit.sh" --source "$tiny" --out "$tmp/refused" --tasks 2 --fineshard "$bin" --dp 3 \
    --additional-config "$fg_tiny" >/dev/null 2>"$tmp/log/refuse-plan.err" || rc=$?
if [ "$rc" -eq 2 ] && grep -q "nothing submitted" "$tmp/log/refuse-plan.err"; then
    pass "submit.sh refuses a plan fineshard rejects (DP 3, fine-grained 2/4): exit 2"
else
    fail "submit.sh with a bad plan: exit $rc, $(cat "$tmp/log/refuse-plan.err")"
fi

# --- the failure scenario first (it needs a task to be running when it is cancelled) ---------------------
# A wrapper around fineshard: task 1 dies at its first piece (SIGKILL, like an OOM kill or a lost node);
# task 2 is slowed (every pwrite delayed 1 s by strace) so that the test can scancel it mid-write.
cat >"$tmp/fineshard-faulty" <<WRAP
#!/usr/bin/env bash
if [ "\${1:-}" = shard ] && [ -n "\${SLURM_ARRAY_TASK_ID:-}" ]; then
    if [ "\$SLURM_ARRAY_TASK_ID" = "\${TEST_KILL_TASK:-}" ]; then export FINESHARD_FAULT=piece:1:kill; fi
    if [ "\$SLURM_ARRAY_TASK_ID" = "\${TEST_SLOW_TASK:-}" ]; then
        if [ "\${TEST_SLOW_MODE:-}" = strace ]; then
            exec strace -f -qq -o /dev/null -e trace=pwrite64 -e inject=pwrite64:delay_enter=1000000 "$bin" "\$@"
        else
            export FINESHARD_FAULT=piece:2:term
        fi
    fi
fi
exec "$bin" "\$@"
WRAP
chmod +x "$tmp/fineshard-faulty"
slow_mode=strace
[ -z "${FINESHARD_SLURM_TEST_NO_STRACE:-}" ] || slow_mode=self-term
if [ "$slow_mode" = strace ] && ! strace -f -qq -o /dev/null -e trace=pwrite64 -e inject=pwrite64:delay_enter=1000 true 2>/dev/null; then
    slow_mode=self-term
    log "strace cannot trace here (ptrace denied?): task 2 sends itself SIGTERM (FINESHARD_FAULT=piece:2:term) instead of a real scancel"
fi

fault_out="$tmp/out/fault-tiny-dp4-tp2-t4"
mkdir -p "$tmp/out"
fault_args=(--source "$tiny" --out "$fault_out" --tasks 4 --fineshard "$tmp/fineshard-faulty" --dp 4 --tp 2)
t_fault=$(date +%s%N)
TEST_KILL_TASK=1 TEST_SLOW_TASK=2 TEST_SLOW_MODE=$slow_mode submit fault "${fault_args[@]}" || die "submit.sh failed"
fault_array=$ARRAY_ID fault_merge=$MERGE_ID
log "fault scenario: array $fault_array (tiny-llama DP 4 TP 2, 4 tasks; task 1 killed, task 2 cancelled), merge $fault_merge"

# Cancel task 2 of the fault scenario while it writes (a temporary file of its ranks 4-5 exists).
if [ "$slow_mode" = strace ]; then
    seen="" deadline=$(($(date +%s) + 60))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        seen="$(compgen -G "$fault_out/model-rank-[45]-*.fineshard-tmp" | head -n 1 || true)"
        [ -n "$seen" ] && break
        sleep 0.05
    done
    if [ -n "$seen" ]; then
        scancel "${fault_array}_2"
        log "scancel ${fault_array}_2 while it wrote $(basename "$seen")"
    else
        fail "task 2 of the fault scenario never started writing (no temporary file of ranks 4-5 within 60 s)"
    fi
fi


# --- the success scenarios: two checkpoints, several array sizes ---------------------------------------------
declare -A s_args=() s_array=() s_merge=() s_src=()
scenarios=()
add() { # NAME SOURCE TASKS PARALLEL…
    local name=$1 src=$2 tasks=$3
    shift 3
    scenarios+=("$name")
    s_src[$name]="$src"
    s_args[$name]="$(printf '%q ' "$@")"
    submit "$name" --source "$src" --out "$tmp/out/$name" --tasks "$tasks" --fineshard "$bin" "$@" || die "submit.sh $name failed"
    s_array[$name]=$ARRAY_ID s_merge[$name]=$MERGE_ID
}
t_ok=$(date +%s%N)
add tiny-dp4-t1 "$tiny" 1 --dp 4
add tiny-fg-t2 "$tiny" 2 --dp 4 --additional-config "$fg_tiny"
add tiny-dp4-tp2-t3 "$tiny" 3 --dp 4 --tp 2
add tiny-fg-t4 "$tiny" 4 --dp 4 --additional-config "$fg_tiny"
add minilm-fg-t1 "$minilm" 1 --dp 4 --additional-config "$fg_minilm"
add minilm-fg-t2 "$minilm" 2 --dp 4 --additional-config "$fg_minilm"
add minilm-fg-t4 "$minilm" 4 --dp 4 --additional-config "$fg_minilm"
add minilm-dp2-tp2-t3 "$minilm" 3 --dp 2 --tp 2
log "submitted ${#scenarios[@]} success scenarios (${scenarios[*]})"

wait_gone 150 "$fault_array" "$fault_merge" || fail "the fault scenario's jobs did not finish in time"
log "fault scenario finished ($(seconds_since "$t_fault") s after its submission)"
st1="$(job_field "${fault_array}_1" JobState) $(job_field "${fault_array}_1" ExitCode)"
st2="$(job_field "${fault_array}_2" JobState) $(job_field "${fault_array}_2" ExitCode)"
stm="$(job_field "$fault_merge" JobState) $(job_field "$fault_merge" ExitCode)"
merge_log="$fault_out/.fineshard/slurm/merge-$fault_merge.log"
[[ "$st1" == FAILED* ]] && pass "killed task 1 is FAILED ($st1)" || fail "killed task 1: $st1"
if [ "$slow_mode" = strace ]; then
    [[ "$st2" == CANCELLED* ]] && pass "scancelled task 2 is CANCELLED ($st2)" || fail "scancelled task 2: $st2"
else
    [[ "$st2" == FAILED* ]] && pass "self-terminated task 2 is FAILED ($st2)" || fail "self-terminated task 2: $st2"
fi
if [[ "$stm" == "FAILED 2:0" ]] && grep -q "INCOMPLETE: ranks 2-5 of 0-7" "$merge_log" \
    && grep -q "task 1 (ranks 2-3)" "$merge_log" && grep -q "task 2 (ranks 4-5)" "$merge_log"; then
    pass "merge step fails ($stm) naming the missing ranks: $(grep -o 'INCOMPLETE.*' "$merge_log")"
else
    fail "merge step after a failed and a cancelled task: $stm; log: $(cat "$merge_log" 2>/dev/null)"
fi
leftover="$(find "$fault_out" -name 'model-rank-[45]-*.fineshard-tmp' | xargs -r -n1 basename | tr '\n' ' ')"
[ -z "$leftover" ] && pass "the cancelled task (SIGTERM) left no *.fineshard-tmp file" \
    || fail "the cancelled task left temporary files: $leftover"
killed_tmp="$(find "$fault_out" -name '*.fineshard-tmp' | xargs -r -n1 basename | tr '\n' ' ')"
[ -z "$killed_tmp" ] || log "the SIGKILLed task left ${killed_tmp}(expected: SIGKILL cannot be handled; the resubmitted task removes them)"
if [ ! -e "$fault_out/manifest.json" ]; then pass "no manifest.json after a failed merge"; else fail "a manifest.json exists after a failed merge"; fi

# Resubmit with the command the merge step printed (tasks 1 and 2 and a new merge), without the faults.
resubmit_cmd="$(sed -n 's/.*resubmit those tasks and this step with: //p' "$merge_log")"
if [[ "$resubmit_cmd" == *"--only-tasks 1,2" ]]; then
    pass "merge step prints the resubmit command (… --only-tasks 1,2)"
else
    fail "merge step's resubmit command: '$resubmit_cmd'"
    resubmit_cmd="$(printf '%q ' "$here/submit.sh" "${fault_args[@]}") --only-tasks 1,2"
fi
re_out="$(env -u TEST_KILL_TASK -u TEST_SLOW_TASK bash -c "$resubmit_cmd" 2>>"$tmp/log/resubmit.err")" || { cat "$tmp/log/resubmit.err" >&2; die "resubmission failed"; }
re_array="$(sed -n 's/^array_job_id=//p' <<<"$re_out")" re_merge="$(sed -n 's/^merge_job_id=//p' <<<"$re_out")"
jobs_submitted+=("$re_array" "$re_merge")
log "resubmitted tasks 1,2 as array $re_array, merge $re_merge"

wait_gone 150 "${s_array[@]}" "${s_merge[@]}" "$re_array" "$re_merge" || fail "jobs did not finish in time"
log "all jobs finished (success scenarios: $(seconds_since "$t_ok") s after their submission)"

# --- checks ------------------------------------------------------------------------------------------------
: >"$tmp/bytes.txt"
stm="$(job_field "$re_merge" JobState) $(job_field "$re_merge" ExitCode)"
if [[ "$stm" == "COMPLETED 0:0" ]] && "$bin" verify "$fault_out" --source "$tiny" --quiet >/dev/null 2>&1 && no_tmp_files "$fault_out"; then
    pass "after resubmitting tasks 1,2 the merge completes and verify --source passes; no temporary files left, not even the killed task's"
else
    fail "resubmission: merge $stm; $(tail -n 5 "$fault_out/.fineshard/slurm/merge-$re_merge.log" 2>/dev/null)"
fi
check_bytes "$fault_out" fault-resubmitted "$tiny" || fail "bytes read by the resubmitted tasks (see below)"

for name in "${scenarios[@]}"; do
    out="$tmp/out/$name"
    src="${s_src[$name]}"
    eval "args=(${s_args[$name]})"
    stm="$(job_field "${s_merge[$name]}" JobState) $(job_field "${s_merge[$name]}" ExitCode)"
    if [[ "$stm" != "COMPLETED 0:0" ]]; then
        fail "$name: merge job $stm; $(tail -n 8 "$out/.fineshard/slurm/merge-${s_merge[$name]}.log" 2>/dev/null)"
        continue
    fi
    problems=()
    # verify --source on the union of the partial manifests (manifest.json set aside), then on manifest.json
    mv "$out/manifest.json" "$tmp/manifest.json.aside"
    "$bin" verify "$out" --source "$src" --quiet >"$tmp/log/verify-$name.txt" 2>&1 || problems+=("verify --source of the union failed: $(tail -n 3 "$tmp/log/verify-$name.txt")")
    mv "$tmp/manifest.json.aside" "$out/manifest.json"
    "$bin" verify "$out" --source "$src" --quiet >>"$tmp/log/verify-$name.txt" 2>&1 || problems+=("verify --source of manifest.json failed")
    check_same_as_single "$out" "$src" "${args[@]}" || problems+=("files differ from a single-process shard")
    no_tmp_files "$out" || problems+=("temporary files left")
    check_bytes "$out" "$name" "$src" || problems+=("bytes_read differs from the plan")
    if [ ${#problems[@]} -eq 0 ]; then
        pass "$name: merge COMPLETED; verify --source passes on the union and on manifest.json; files equal a single-process shard; bytes_read = plan"
    else
        fail "$name: ${problems[*]}"
    fi
done

echo "--- bytes read per task vs the plan ---"
cat "$tmp/bytes.txt"
echo "--- summary ---"
echo "slurm test: $passes passed, ${#failures[@]} failed; $(seconds_since "$t_cluster") s from cluster start ($(elapsed) s in all); cancel: $slow_mode"
if [ ${#failures[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failures[@]}"
    echo "RESULT: FAIL"
    if [ "$keep" -eq 0 ]; then echo "(run with --keep to keep $tmp and its logs)"; fi
    exit 1
fi
echo "RESULT: PASS"
