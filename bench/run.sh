#!/usr/bin/env bash
# Runs every benchmark; each prints one JSON object. Results belong in the issue notes, not in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
benches=()
[ -f bench/benches.txt ] && mapfile -t benches < <(grep -v '^#' bench/benches.txt | grep -v '^$')
if [ ${#benches[@]} -eq 0 ]; then
    echo '{"benchmarks": []}'
    exit 0
fi
for b in "${benches[@]}"; do
    echo "== civicedge bench $b" >&2
    $BIN/civicedge bench $b --json
done
