#!/usr/bin/env bash
# Regenerates docs/cli/*.txt, the command reference, from the built binary's --help output.
# Tests/FineShardTests/HelpSnapshotTests.swift compares them with the binary verbatim, so the
# reference cannot drift from the tool. Usage: scripts/gen_docs.sh [path/to/fineshard]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-.build/debug/fineshard}"
mkdir -p docs/cli
for command in "" inspect plan shard verify merge forward-check "manifest combine"; do
  name="${command:-fineshard}"
  name="${name// /-}"
  # shellcheck disable=SC2086
  COLUMNS=80 "$bin" $command --help > "docs/cli/$name.txt"
done
echo "wrote $(ls docs/cli | wc -l) files to docs/cli" >&2
