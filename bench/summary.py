"""``make bench`` summary: every benchmark's JSON in one file, and a Markdown table of the results against their
targets, both under ``bench/results/`` (not committed from CI runs).

Targets come from a benchmark's own ``targets`` object when it prints one, else from :data:`TARGETS` (the
issues' figures). A metric whose name says it is a time, a size or a loss must stay at or below its target;
any other (rates, ratios, improvements) at or above.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

TARGETS: dict[str, dict[str, float]] = {
    "gate": {
        "decision_ms_p99": 30,
        "overhead_ratio": 1.3,
        "search_ms_50k": 5,
        "temp_abs_err_p95_c": 0.3,
        "rss_mb": 150,
    },
    "lift": {"retrieval_s_p99": 120, "improvement": 1.2},
    "fleet": {"alarm_to_console_ms_p99": 1000, "lost": 0, "cloud_rss_mb": 500},
    "fuzz": {"failing_operations": 0},
}
#: words that make a metric one to keep low whatever else its name says (overhead_ratio, lost, rss_mb…)
AT_MOST_WORDS = ("lost", "duplicates", "rss", "err", "overhead", "false_alarms", "failing")
#: a time: a unit as a whole word of the name (decision_ms_p99, retrieval_s_p99, per_message_us_1000_rules)
_TIME = re.compile(r"(^|_)(ms|s|us)(_|$)")


def at_most(metric: str) -> bool:
    """True when ``metric`` must stay at or below its target (a time, a size, a loss); False for rates, ratios
    and improvements, which must reach it."""
    if any(k in metric for k in AT_MOST_WORDS):
        return True
    if "per_s" in metric or "ratio" in metric:
        return False
    return _TIME.search(metric) is not None


def rows(name: str, report: dict[str, Any]) -> list[tuple[str, str, Any, Any, str]]:
    targets = {**TARGETS.get(name, {}), **(report.get("targets") or {})}
    out = []
    for metric, target in targets.items():
        value = _find(report, metric)
        if value is None:
            out.append((name, metric, "—", target, "not measured"))
            continue
        ok = value <= target if at_most(metric) else value >= target
        out.append((name, metric, value, target, "met" if ok else "missed"))
    return out


def _find(report: dict[str, Any], metric: str) -> Any:
    """The metric at the top of the report, else one level down (e.g. {"one_worker": {...}}), never in the
    report's targets; None (not measured) when it is missing or null."""
    if metric in report:
        value = report[metric]
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    for key, v in report.items():
        if key != "targets" and isinstance(v, dict) and isinstance(v.get(metric), int | float):
            return v[metric]
    return None


def main(results_dir: Path, reports: list[tuple[str, dict[str, Any]]]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results_dir / f"bench-{stamp}.json").write_text(json.dumps(dict(reports), indent=1))
    lines = [
        f"# Benchmarks {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| bench | metric | value | target | |",
        "|---|---|---|---|---|",
    ]
    for name, report in reports:
        for bench, metric, value, target, verdict in rows(name, report):
            op = "≤" if at_most(metric) else "≥"
            lines.append(f"| {bench} | `{metric}` | {value} | {op} {target} | {verdict} |")
    md = results_dir / f"bench-{stamp}.md"
    md.write_text("\n".join(lines) + "\n")
    (results_dir / "latest.md").write_text(md.read_text())
    return md


if __name__ == "__main__":
    # argv: results dir, then name=path pairs of the JSON each benchmark printed
    got = []
    for arg in sys.argv[2:]:
        name, _, path = arg.partition("=")
        text = Path(path).read_text().strip()
        got.append((name, json.loads(text) if text else {"error": "no output"}))
    print(main(Path(sys.argv[1]), got).read_text())
