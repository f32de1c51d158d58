#!/usr/bin/env bash
# GFLOP/s of the forward check's matrix product on DeepSeek-R1 widths (issue 17 item 5):
# Kernels.linear's portable Swift tile (swift-tiled), its AVX2 + FMA C kernel on float32 and on bf16
# weights (avx2-f32, avx2-bf16; fineshard-kernel-bench, release build) and main's former dot-per-output
# kernel, beside OpenBLAS cblas_sgemm (scripts/bench/sgemm_openblas.c, needs libopenblas-dev), at 1 and 2 threads.
#   [SCRATCH=.build-x] scripts/bench/kernels.sh [--no-build]
# Prints `kernel M K N threads ms GFLOP/s` rows (best of 3 each).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "${1:-}" = --no-build ] || swift build -c release --scratch-path "${SCRATCH:-.build}" --product fineshard-kernel-bench >&2
BIN=$(swift build -c release --scratch-path "${SCRATCH:-.build}" --show-bin-path)/fineshard-kernel-bench
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "kernel M K N threads ms GFLOP/s"
for t in 1 2; do "$BIN" "$t"; done
if dpkg -s libopenblas-dev >/dev/null 2>&1; then
    sgemm=$(mktemp)
    cc -O2 -o "$sgemm" scripts/bench/sgemm_openblas.c -lopenblas
    for t in 1 2; do "$sgemm" "$t"; done
    rm -f "$sgemm"
else
    echo "# libopenblas-dev not installed: no OpenBLAS rows" >&2
fi
