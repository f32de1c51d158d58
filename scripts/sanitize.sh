#!/usr/bin/env bash
# Sanitizer runs (issue 7, item 8). Usage: scripts/sanitize.sh [address|thread|all]  (default all)
#   address  AddressSanitizer: the header parser, safetensors I/O, broken-input and HDF5 tests
#            (scratch .build-asan). libhdf5/libzstd are system libraries, not instrumented:
#            ASan sees Swift's side of every buffer handed to them, not their internals.
#   thread   ThreadSanitizer: the concurrent paths — the shard executor's worker threads and
#            parallel hashing in verify (scratch .build-tsan). Those tests run the built
#            `fineshard` binary, which `swift test` builds in the same scratch path with the
#            same sanitizer; the environment below reaches it through the tests' run().
# A sanitizer report anywhere (test process or a fineshard child) is written to
# $scratch/sanitizer-logs/ and fails the run, even when the test that caused it passed; the
# reports are printed. Suppressions: scripts/tsan.supp (each with its reason).
# Env: SANITIZE_KEEP=1 keeps the scratch folders (incremental re-runs; default removes them).
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
root="$PWD"

# The shard tests that compare against the Python libraries need FINESHARD_PYTHON (setup.sh).
if [ -z "${FINESHARD_PYTHON:-}" ]; then
  source scripts/setup.sh
fi

status=0

# run NAME SANITIZER SCRATCH FILTER OPTIONS_VAR OPTIONS
run() {
  local name="$1" sanitizer="$2" scratch="$3" filter="$4" var="$5" options="$6"
  local logs="$root/$scratch/sanitizer-logs"
  rm -rf "$logs"
  mkdir -p "$logs"
  local start=$SECONDS
  echo "sanitize: $name: building (scratch $scratch)" >&2
  if ! swift build --build-tests --scratch-path "$scratch" --sanitize="$sanitizer" 2>&1 |
    { grep -v "Cannot export local symbol" || true; } >&2; then
    echo "sanitize: $name: build failed" >&2
    status=1
    return
  fi
  local built=$((SECONDS - start))
  echo "sanitize: $name: testing --filter '$filter'" >&2
  local rc=0
  env "$var=$options:log_path=$logs/report" \
    swift test --skip-build --scratch-path "$scratch" --sanitize="$sanitizer" --filter "$filter" \
    >"$logs/../sanitize-$name.log" 2>&1 || rc=$?
  tail -5 "$logs/../sanitize-$name.log" >&2
  local reports=("$logs"/report.*)
  if [ -e "${reports[0]}" ]; then
    echo "sanitize: $name: ${#reports[@]} sanitizer report(s):" >&2
    for r in "${reports[@]}"; do echo "--- $r" >&2; cat "$r" >&2; done
    status=1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "sanitize: $name: swift test failed (exit $rc); log $scratch/sanitize-$name.log" >&2
    grep -E "✘|error|ERROR|WARNING: ThreadSanitizer|AddressSanitizer" "$logs/../sanitize-$name.log" | head -60 >&2 || true
    status=1
  fi
  echo "sanitize: $name: build ${built} s, tests $((SECONDS - start - built)) s, exit $rc" >&2
  [ "${SANITIZE_KEEP:-0}" = 1 ] || [ "$status" -ne 0 ] || rm -rf "$scratch"
}

if [ "$which" = address ] || [ "$which" = all ]; then
  run address address .build-asan "SafetensorsHeader|Safetensors|BadInput|HDF5" ASAN_OPTIONS \
    "halt_on_error=1:exitcode=66:detect_leaks=0:allocator_may_return_null=0"
fi
if [ "$which" = thread ] || [ "$which" = all ]; then
  run thread thread .build-tsan "ShardCommand|VerifyMutation" TSAN_OPTIONS \
    "halt_on_error=1:exitcode=66:second_deadlock_stack=1:suppressions=$root/scripts/tsan.supp"
fi
exit "$status"
