#!/usr/bin/env bash
# Fuzzes fineshard's parsers with libFuzzer (issue 7, item 4):
#   FuzzHeader  SafetensorsHeader.parse  (safetensors header JSON, whole files)
#   FuzzIndex   IndexParser.weightMap    (model.safetensors.index.json)
#   FuzzManifest Manifest.decode + validate (manifest.json of an output folder, issue 14)
# Usage: scripts/fuzz.sh [SECONDS]   (per target, default 60; the targets run at once)
# Exits non-zero when a target crashes, hangs (-timeout), runs out of memory (-rss_limit_mb,
# -malloc_limit_mb) or breaks its contract (see fuzz/Sources/*); the input is saved as
# fuzz/crashes/<Target>-<kind>-<sha1>. Reproduce with:  .build-fuzz/debug/<Target> <file>
# Env: FUZZ_SCRATCH (default .build-fuzz), FUZZ_KEEP_CORPUS=1 keeps the grown corpus in
# $FUZZ_SCRATCH/corpus between runs (it is always there after a run; the committed seeds are
# fuzz/corpus/ and fixtures/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
scratch="${FUZZ_SCRATCH:-.build-fuzz}"

echo "fuzz: building (scratch $scratch)" >&2
build_start=$SECONDS
# The ld.gold warnings about ASan's local symbols are noise.
if ! swift build --package-path fuzz -c debug --scratch-path "$scratch" \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library 2>&1 |
  { grep -v "Cannot export local symbol" || true; } >&2; then
  echo "fuzz: build failed" >&2
  exit 2
fi
bin="$(swift build --package-path fuzz -c debug --scratch-path "$scratch" --show-bin-path)"
for t in FuzzHeader FuzzIndex FuzzManifest; do
  [ -x "$bin/$t" ] || { echo "fuzz: build failed, no $bin/$t" >&2; exit 2; }
done
echo "fuzz: built in $((SECONDS - build_start)) s" >&2

# Seeds: the committed minimal seeds, the broken-input corpus and the tiny-llama checkpoint.
seeds="$scratch/seeds"
rm -rf "$seeds"
mkdir -p "$seeds/FuzzHeader" "$seeds/FuzzIndex" "$seeds/FuzzManifest" fuzz/crashes
cp fuzz/corpus/header/* fixtures/bad/*.safetensors fixtures/tiny-llama/model.safetensors "$seeds/FuzzHeader/"
for f in fixtures/bad/*/model.safetensors.index.json; do
  cp "$f" "$seeds/FuzzIndex/$(basename "$(dirname "$f")").json"
done
cp fuzz/corpus/index/* "$seeds/FuzzIndex/"
cp fuzz/corpus/manifest/* "$seeds/FuzzManifest/"
[ "${FUZZ_KEEP_CORPUS:-0}" = 1 ] || rm -rf "$scratch/corpus"

pids=()
for t in FuzzHeader FuzzIndex FuzzManifest; do
  mkdir -p "$scratch/corpus/$t"
  # -max_len: the largest seed (tiny-llama, 406 KB) would otherwise set it, and slow every run.
  # -malloc_limit_mb: no input here justifies one allocation of 512 MB (a header is ≤ 64 KB).
  "$bin/$t" "$scratch/corpus/$t" "$seeds/$t" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
    -max_len=65536 -dict=fuzz/json.dict -artifact_prefix="fuzz/crashes/$t-" \
    -print_final_stats=1 >"$scratch/$t.log" 2>&1 &
  pids+=($!)
done
status=0
i=0
for t in FuzzHeader FuzzIndex FuzzManifest; do
  if wait "${pids[$i]}"; then
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$t.log" | grep -o '[0-9]*$' || echo '?')"
    echo "fuzz: $t clean, $runs runs in $seconds s" >&2
  else
    rc=$?
    status=1
    echo "fuzz: $t FAILED (exit $rc); log $scratch/$t.log:" >&2
    grep -v "^#[0-9]" "$scratch/$t.log" | tail -60 >&2
  fi
  i=$((i + 1))
done
exit "$status"
