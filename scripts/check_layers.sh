#!/usr/bin/env bash
# Fails (exit 1) when a library target imports a layer above it, naming the file and the import.
# The layers, bottom to top (docs/ARCHITECTURE.md); a target may import only those before it.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=(FineShardSystem FineShardFormats FineShardModel FineShardPlanning FineShardOutput FineShardExecution
  FineShardVerification FineShard fineshard)
status=0
for ((i = 0; i < ${#layers[@]}; i++)); do
  target=${layers[i]}
  [ -d "Sources/$target" ] || { echo "check_layers: Sources/$target is missing" >&2; exit 1; }
  for ((j = i; j < ${#layers[@]}; j++)); do
    above=${layers[j]}
    # An import of the target itself or of any layer above it (`@testable`/`@_exported` included).
    while IFS= read -r hit; do
      echo "check_layers: ${hit%%:*}: $target imports $above, a layer at or above it" >&2
      status=1
    done < <(grep -rnE "^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*import[[:space:]]+(class |struct |enum |func |protocol |var |let )?$above([[:space:]]|\.|$)" \
      --include='*.swift' "Sources/$target" || true)
  done
done
exit $status
