"""Each rule kind firing and not firing at its edges, with a controllable clock (no I/O)."""

from __future__ import annotations

import pytest

from cloud.rules.engine import RuleEngine, Transition
from cloud.rules.model import RulesError, load_rules

S = 1000  # ms per second


def engine(yaml_text: str) -> RuleEngine:
    return RuleEngine(load_rules(yaml_text))


def states(ts: list[Transition]) -> list[tuple[str, bool]]:
    return [(t.rule.id, t.active) for t in ts]


TILT = """
rules:
  - id: cover-tilt
    match: {kinds: [manhole]}
    when: {type: threshold, metric: tilt_deg, above: 5, clear_at: 4, for_s: 10}
    actions: [{alarm: {severity: major, code: cover_tilt}}]
"""


def test_threshold_needs_the_duration_and_has_hysteresis() -> None:
    e = engine(TILT)
    r = lambda v, t: states(e.observe_reading("s", "manhole", "mh-1", "tilt_deg", v, t * S))  # noqa: E731
    assert r(5.0, 0) == []  # at the limit is not above it
    assert r(5.1, 1) == []  # breach starts, not yet 10 s
    assert r(6.0, 10) == []  # 9 s
    assert r(6.0, 11) == [("cover-tilt", True)]  # 10 s of breach
    assert r(4.5, 12) == []  # below the limit but above clear_at: stays active
    assert r(4.0, 13) == [("cover-tilt", False)]
    assert r(9.0, 14) == [] and r(3.0, 15) == [] and r(9.0, 16) == []  # a dip restarts the duration
    assert r(9.0, 25) == []
    assert r(9.0, 26) == [("cover-tilt", True)]


def test_threshold_duration_fires_on_the_timer_without_new_readings() -> None:
    e = engine(TILT)
    assert e.observe_reading("s", "manhole", "mh-1", "tilt_deg", 7, 0) == []
    assert e.tick(9 * S) == []
    assert states(e.tick(10 * S)) == [("cover-tilt", True)]


def test_match_filters_kinds_sites_devices() -> None:
    e = engine(TILT)
    assert e.observe_reading("s", "elevator", "el-1", "tilt_deg", 90, 0) == []
    assert e.observe_reading("s", "elevator", "el-1", "tilt_deg", 90, 60 * S) == []


def test_change_of_state() -> None:
    e = engine("""
rules:
  - id: elevator-fire-mode
    when: {type: change, message_type: elevator.status, field: state, to: fire}
""")
    m = lambda st, t: states(e.observe_message("s", "elevator", "el-1", "elevator.status", {"state": st}, t))  # noqa: E731
    assert m("normal", 0) == []
    assert m("fire", 1) == [("elevator-fire-mode", True)]
    assert m("fire", 2) == []  # no repeat while active
    assert m("normal", 3) == [("elevator-fire-mode", False)]


def test_rate_of_change() -> None:
    e = engine("""
rules:
  - id: water-rising
    when: {type: rate, metric: water_level_cm, rise_per_min: 10, window_s: 120}
""")
    r = lambda v, t: states(e.observe_reading("s", "manhole", "mh-1", "water_level_cm", v, t * S))  # noqa: E731
    assert r(20, 0) == []
    assert r(29, 60) == []  # 9 cm/min: not faster than 10
    assert r(45, 120) == [("water-rising", True)]  # (45-20)/2 min = 12.5 cm/min
    assert r(46, 240) == [("water-rising", False)]  # window now 120..240: 0.5 cm/min


def test_absence_on_the_timer_and_recovery() -> None:
    e = engine("""
rules:
  - id: gateway-silent
    match: {kinds: [gateway]}
    when: {type: absence, after_s: 300}
""")
    assert e.observe_message("s", "gateway", "gw-1", "health", {}, 0) == []
    assert e.tick(299 * S) == []
    assert states(e.tick(300 * S)) == [("gateway-silent", True)]
    assert e.tick(400 * S) == []  # already active: no repeat
    assert states(e.observe_message("s", "gateway", "gw-1", "health", {}, 401 * S)) == [("gateway-silent", False)]
    # a registered device that never spoke counts from when the engine first learned of it
    assert e.tick(500 * S, devices=[("gw-2", "s", "gateway")]) == []
    assert ("gateway-silent", True) in states(e.tick(800 * S))


def test_absence_follows_each_device_through_silence_and_speech() -> None:
    """The timer keeps only what can be due: a device that keeps speaking is never raised; one that falls silent
    again after recovering is raised again a full period after it last spoke, not earlier, not never; and the
    same holds for a district of devices after the rules are reloaded."""
    e = engine("""
rules:
  - id: node-silent
    match: {kinds: [manhole]}
    when: {type: absence, after_s: 100}
""")
    for t in range(0, 1000, 50):  # mh-1 speaks every 50 s
        e.observe_message("s", "manhole", "mh-1", "manhole.reading", {}, t * S)
        assert e.tick(t * S + 1) == []
    e.observe_message("s", "manhole", "mh-2", "manhole.reading", {}, 0)
    assert states(e.tick(100 * S)) == [("node-silent", True)]  # mh-2 (mh-1 spoke at 50)
    assert states(e.observe_message("s", "manhole", "mh-2", "manhole.reading", {}, 130 * S)) == [("node-silent", False)]
    assert e.tick(229 * S) == []
    fired = e.tick(230 * S)
    assert [(t.device, t.active) for t in fired] == [("mh-2", True)]
    e.load(
        load_rules("rules:\n  - {id: node-silent, match: {kinds: [manhole]}, when: {type: absence, after_s: 100}}\n")
    )
    many = [(f"mh-{i}", "s", "manhole") for i in range(3, 2003)]
    assert e.tick(300 * S, devices=many) == []
    raised = e.tick(400 * S)
    assert {t.device for t in raised if t.active} == {d for d, _s, _k in many}


def test_combination_within_a_window() -> None:
    e = engine("""
rules:
  - id: tilt
    when: {type: threshold, metric: tilt_deg, above: 5}
  - id: water
    when: {type: threshold, metric: water_level_cm, above: 80}
  - id: displaced-flooding
    when: {type: combination, all_of: [tilt, water], window_s: 600}
    actions: [{alarm: {severity: critical, code: cover_displaced_flooding}}]
""")
    assert states(e.observe_reading("s", "manhole", "mh-1", "tilt_deg", 9, 0)) == [("tilt", True)]
    out = states(e.observe_reading("s", "manhole", "mh-1", "water_level_cm", 90, 100 * S))
    assert out == [("water", True), ("displaced-flooding", True)]
    out = states(e.observe_reading("s", "manhole", "mh-1", "tilt_deg", 1, 200 * S))
    assert out == [("tilt", False), ("displaced-flooding", False)]
    # too far apart: water first, tilt 20 min later
    e2 = engine(
        e_text := """
rules:
  - id: tilt
    when: {type: threshold, metric: tilt_deg, above: 5}
  - id: water
    when: {type: threshold, metric: water_level_cm, above: 80}
  - id: both
    when: {type: combination, all_of: [tilt, water], window_s: 600}
"""
    )
    assert e_text
    e2.observe_reading("s", "manhole", "mh-2", "water_level_cm", 90, 0)
    assert states(e2.observe_reading("s", "manhole", "mh-2", "tilt_deg", 9, 1200 * S)) == [("tilt", True)]


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("rules: [{id: a, when: {type: threshold, metric: m}}]", "exactly one of above / below"),
        ("rules: [{id: a, when: {type: threshold, metric: m, above: 5, clear_at: 6}}]", "hysteresis"),
        ("rules: [{id: a, when: {type: combination, all_of: [x, y]}}]", "unknown rule(s) x, y"),
        (
            "rules: [{id: a, when: {type: absence, after_s: 5}}, {id: a, when: {type: absence, after_s: 6}}]",
            "duplicate rule id(s): a",
        ),
        ("rules: [{id: a, when: {type: teleport}}]", "rules.0.when"),
        ("rules: [{id: a, when: {type: absence, after_s: 5}, actions: [{alarm: {severity: huge}}]}]", "severity"),
        ("rules: [{id: a, when: {type: absence, after_s: 5}, colour: red}]", "rules.0.colour"),
    ],
)
def test_bad_rules_are_refused_with_the_path(text: str, expect: str) -> None:
    with pytest.raises(RulesError) as exc:
        load_rules(text, "rules.yaml")
    assert expect in str(exc.value)


def test_reload_keeps_state_of_remaining_rules() -> None:
    e = engine(TILT)
    e.observe_reading("s", "manhole", "mh-1", "tilt_deg", 9, 0)
    e.observe_reading("s", "manhole", "mh-1", "tilt_deg", 9, 10 * S)
    assert e.active() == [("cover-tilt", "mh-1")]
    e.load(load_rules(TILT.replace("for_s: 10", "for_s: 20")))
    assert e.active() == [("cover-tilt", "mh-1")]
    e.load(load_rules("rules: []"))
    assert e.active() == []


def test_default_rule_set_loads_and_covers_every_unit_kind() -> None:
    from pathlib import Path

    import cloud.rules

    text = (Path(cloud.rules.__file__).parent / "default.yaml").read_text()
    rules = load_rules(text, "default.yaml")
    kinds = {k for r in rules.rules for k in r.match.kinds}
    assert {"manhole", "gate", "barrier", "parking_lift", "elevator", "gateway"} <= kinds
    assert {type(r.when).__name__ for r in rules.rules} == {"Threshold", "Change", "Rate", "Absence", "Combination"}
    e = RuleEngine(rules)
    out = states(e.observe_message("s", "elevator", "el-1", "elevator.status", {"state": "fire"}, 0))
    assert out == [("elevator-fire-mode", True)]


HYSTERESIS = """
rules:
  - id: cover-tilt
    when: {type: threshold, metric: tilt_deg, above: 5, clear_at: 4}
"""


@pytest.mark.parametrize(
    ("readings", "active"),
    [
        ([(0, 6.0), (1, 4.5), (2, 6.5), (3, 3.5)], False),  # raised, held by hysteresis, cleared
        ([(0, 3.0), (1, 4.5), (2, 3.8), (3, 6.0)], True),  # raised at last
    ],
)
def test_readings_split_between_workers_end_in_the_same_state_whatever_their_order(
    readings: list[tuple[int, float]], active: bool
) -> None:
    """Two workers may hand a device's readings to the rules in any order: a reading older than one already
    applied is ignored, so when the newest reading is beyond the limit or past the clearing point every order
    ends where the device really is (inside the hysteresis band the state is what the readings applied made
    it, as with a device whose readings were lost)."""
    import itertools

    for order in itertools.permutations(readings):
        e = engine(HYSTERESIS)
        for t, v in order:
            e.observe_reading("s", "manhole", "mh-1", "tilt_deg", v, t * S)
        assert (("cover-tilt", "mh-1") in e.active()) is active, order


def test_a_rate_window_is_kept_in_time_order() -> None:
    e = engine("""
rules:
  - id: water-rising
    when: {type: rate, metric: water_level_cm, rise_per_min: 10, window_s: 120}
""")
    r = lambda v, t: states(e.observe_reading("s", "manhole", "mh-1", "water_level_cm", v, t * S))  # noqa: E731
    assert r(45, 120) == []  # the newest first (another worker had the others)
    assert r(20, 0) == [("water-rising", True)]  # (45-20)/2 min = 12.5 cm/min, as in time order
    assert r(29, 60) == []
    assert r(10, -200) == []  # older than the whole window: ignored


def test_a_board_flooding_a_rate_window_keeps_it_small() -> None:
    e = engine("""
rules:
  - id: water-rising
    when: {type: rate, metric: water_level_cm, rise_per_min: 10, window_s: 300}
""")
    for i in range(5000):  # a reading every millisecond
        e.observe_reading("s", "manhole", "mh-1", "water_level_cm", 20.0, i)
    (st,) = e.state.values()
    assert len(st.window) <= 256 and st.window[-1] == (4999, 20.0) and st.window[0][0] == 0
    # a finite reading that makes an infinite rate is no rate at all
    assert e.observe_reading("s", "manhole", "mh-1", "water_level_cm", 1e308, 5000) == []


def test_the_rule_index_still_honours_site_device_and_a_subtype_that_changes() -> None:
    subtypes: dict[str, str] = {}
    e = RuleEngine(
        load_rules("""
rules:
  - id: sewer-tilt
    match: {kinds: [manhole], subtypes: [sewer], sites: [north]}
    when: {type: threshold, metric: tilt_deg, above: 5}
"""),
        lambda device: subtypes.get(device, ""),
    )
    r = lambda site, kind, dev, t: states(e.observe_reading(site, kind, dev, "tilt_deg", 9.0, t * S))  # noqa: E731
    assert r("north", "manhole", "mh-1", 0) == []  # no subtype yet (the index is built now)
    assert r("north", "gate", "mh-1", 1) == []  # another kind
    subtypes["mh-1"] = "sewer"  # the registry says what it is
    assert r("south", "manhole", "mh-1", 2) == []  # another site
    assert r("north", "manhole", "mh-1", 3) == [("sewer-tilt", True)]


def test_a_device_cannot_grow_the_engine_and_a_changed_device_is_watched_again() -> None:
    """Plays a device that sends made-up metric and message names by the thousand: the engine remembers only
    names its rules use. A device whose kind changes after it was first seen (auto-registered as a gateway,
    corrected by an operator) gets the absence watch of its new kind. A zero-length absence does not spin."""
    e = engine("""
rules:
  - id: node-silent
    match: {kinds: [manhole]}
    when: {type: absence, after_s: 100}
  - id: blink
    match: {kinds: [manhole]}
    when: {type: absence, after_s: 0.0001}
""")
    for i in range(5000):
        e.observe_reading("s", "manhole", "mh-9", f"made.up.{i}", 1.0, i)
        e.observe_message("s", "manhole", "mh-9", f"made.up.{i}", {}, i)
    assert len(e._index) <= 4
    e.observe_message("s", "gateway", "gw-7", "health", {}, 0)
    assert e.tick(1 * S) == []
    e.observe_message("s", "manhole", "gw-7", "health", {}, 2 * S)  # now known as a cover node
    fired = e.tick(103 * S)  # returns: the blink rule's near-zero wait did not loop forever
    assert ("node-silent", "gw-7", True) in {(t.rule.id, t.device, t.active) for t in fired}
