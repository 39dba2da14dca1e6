#!/usr/bin/env bash
# Runs every benchmark in bench/benches.txt (each prints one JSON object), then writes one JSON summary and a
# Markdown table of results against targets into bench/results/ (not committed from CI runs).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
benches=()
[ -f bench/benches.txt ] && mapfile -t benches < <(grep -v '^#' bench/benches.txt | grep -v '^$')
if [ ${#benches[@]} -eq 0 ]; then
    echo '{"benchmarks": []}'
    exit 0
fi
out=$(mktemp -d)
pairs=()
status=0
declare -A seen=()
for b in "${benches[@]}"; do
    name=${b%% *}
    # the same benchmark twice (e.g. two fleet runs): fleet, fleet_2, …
    seen[$name]=$(( ${seen[$name]:-0} + 1 ))
    [ "${seen[$name]}" -gt 1 ] && name="${name}_${seen[$name]}"
    echo "== civicedge bench $b" >&2
    if ! $BIN/civicedge bench $b --json > "$out/$name.json"; then
        echo "bench $name failed" >&2
        status=1
    fi
    cat "$out/$name.json"
    pairs+=("$name=$out/$name.json")
done
$BIN/python -m bench.summary bench/results "${pairs[@]}"
rm -rf "$out"
exit $status
