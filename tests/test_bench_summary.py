"""The make-bench summary: targets from a benchmark's own JSON or the issues' figures, the right direction for
each metric, one JSON and one Markdown file."""

from __future__ import annotations

from pathlib import Path

from bench.summary import at_most, main, rows


def test_direction_and_verdicts(tmp_path: Path) -> None:
    assert at_most("decision_ms_p99") and at_most("lost") and at_most("rss_mb")
    assert not at_most("improvement") and not at_most("enqueue_per_s") and not at_most("ratio")
    # a unit is a whole word of the name; "ratio" is reached unless it is an overhead
    assert not at_most("ratio_to_storage") and not at_most("single_ratio_to_raw") and at_most("overhead_ratio")
    assert at_most("per_message_us_1000_rules") and at_most("retrieval_s_p99") and not at_most("drain_per_s")
    # a null value is not measured (not the target read as the value); a run's figures, not its targets
    fleet = {"alarm_to_console_ms_p99": None, "lost": 0, "targets": {"alarm_to_console_ms_p99": 1000, "lost": 0}}
    assert {m: v for _b, m, _val, _t, v in rows("fleet", fleet)} == {
        "alarm_to_console_ms_p99": "not measured",
        "lost": "met",
        "cloud_rss_mb": "not measured",
    }
    gate = {"decision_ms_p99": 24.1, "overhead_ratio": 1.4, "search_ms_50k": 1.9}
    verdicts = {m: v for _b, m, _val, _t, v in rows("gate", gate)}
    assert verdicts["decision_ms_p99"] == "met" and verdicts["overhead_ratio"] == "missed"
    assert verdicts["rss_mb"] == "not measured"
    ingest = {"one_worker": {"readings_per_s": 61000}, "ratio": 0.5, "targets": {"readings_per_s": 50000, "ratio": 0.8}}
    got = {m: v for _b, m, _val, _t, v in rows("ingest", ingest)}
    assert got == {"readings_per_s": "met", "ratio": "missed"}
    md = main(tmp_path, [("gate", gate), ("ingest", ingest)])
    text = md.read_text()
    assert "| gate | `decision_ms_p99` | 24.1 | ≤ 30 | met |" in text
    assert (tmp_path / "latest.md").exists() and len(list(tmp_path.glob("bench-*.json"))) == 1
