"""Rule evaluation: pure state machines fed with observations and clock ticks; no I/O here.

The ingestion path feeds readings and messages in (``observe_*``), a timer calls ``tick`` (absence and
minimum durations fire even when nothing arrives), and the caller executes the returned transitions' actions.
Time comes from the observations and the ticks, so tests drive it with a fake clock.

The engine's memory is :attr:`RuleEngine.state`, one :class:`State` per (rule, device). One process keeps it
all; processes that share the work (:mod:`cloud.rules.shared`) load the rows of a batch's devices, evaluate, and
write them back. Workers may see a device's readings out of order, so a threshold or change ignores an
observation older than the newest it has applied (the newest reading decides; one inside a hysteresis band
leaves the state as the readings applied so far made it), and a rate window is kept in time order.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cloud.rules.model import Absence, Change, Combination, Rate, Rule, RuleSet, Threshold

#: points kept in a rate window (thinned beyond it; the rate needs the window's ends)
MAX_WINDOW = 256


@dataclass(frozen=True, slots=True)
class Transition:
    rule: Rule
    device: str
    site: str
    active: bool
    at_ms: int
    value: Any = None
    reason: str = ""


@dataclass(slots=True)
class State:
    active: bool = False
    since_ms: int = 0
    pending_ms: int | None = None  # a threshold breach waiting for its duration, since
    last_value: float | None = None
    last_ms: int | None = None  # absence: when the device was last heard
    seen_ms: int | None = None  # the newest observation applied
    window: list[tuple[int, float]] = field(default_factory=list)  # rate: (ms, value) in time order

    def stale(self, at: int) -> bool:
        """An observation older than one already applied (it arrived late, through another worker)."""
        if self.seen_ms is not None and at < self.seen_ms:
            return True
        self.seen_ms = at
        return False


def _dig(body: dict[str, Any], path: str) -> Any:
    cur: Any = body
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


class RuleEngine:
    def __init__(self, rules: RuleSet, subtype_of: Callable[[str], str] | None = None) -> None:
        #: the subtype of a device's asset in the registry (for ``match.subtypes``)
        self.subtype_of = subtype_of or (lambda _device: "")
        #: (rule id, device) → its state: everything the engine remembers
        self.state: dict[tuple[str, str], State] = {}
        self.seen: dict[str, tuple[str, str]] = {}  # device → (site, kind)
        self.load(rules)
        self.evaluations = 0

    def load(self, rules: RuleSet) -> None:
        """Replace the rule set (reload); state of rules that still exist is kept."""
        self.rules = [r for r in rules.rules if r.enabled]
        ids = {r.id for r in self.rules}
        self.state = {k: v for k, v in self.state.items() if k[0] in ids}
        self._by_metric: dict[str, list[Rule]] = {}
        self._by_type: dict[str, list[Rule]] = {}
        self._absence = [r for r in self.rules if isinstance(r.when, Absence)]
        self._absence_types = {r.when.message_type for r in self._absence if r.when.message_type}  # type: ignore[union-attr]
        self._combos = [r for r in self.rules if isinstance(r.when, Combination)]
        self._by_id = {r.id: r for r in self.rules}
        # the timer looks only at what can be due (a whole district's devices every second was a tenth of a busy
        # node's time): absence by a heap of (when due, rule, device), checked again when popped (the device may
        # have spoken since); threshold durations by the set of breaches waiting for theirs
        self._due: list[tuple[int, str, str]] = []
        self._scheduled: set[tuple[str, str]] = set()  # (rule, device) in the heap (each once)
        self._unscheduled: set[str] = set(self.seen)  # devices whose absence is not yet in the heap
        self._waiting = {k for k, st in self.state.items() if st.pending_ms is not None and not st.active}
        for r in self.rules:
            if isinstance(r.when, Threshold | Rate):
                self._by_metric.setdefault(r.when.metric, []).append(r)
            elif isinstance(r.when, Change):
                self._by_type.setdefault(r.when.message_type, []).append(r)
        #: (what, metric or message type, device kind) → the rules that can apply, each with whether its site,
        #: device or subtype still needs checking: built on first use, so an observation costs only its own rules
        self._index: dict[tuple[str, str, str], tuple[tuple[Rule, bool], ...]] = {}

    def _pick(self, what: str, key: str, kind: str) -> tuple[tuple[Rule, bool], ...]:
        # only names some rule uses are remembered: a device sending made-up metrics or types must not grow this
        if (what == "metric" and key not in self._by_metric) or (what == "type" and key not in self._by_type):
            return ()
        if what == "absence" and key not in self._absence_types:
            key = ""  # every type no absence rule names picks the same rules
        got = self._index.get((what, key, kind))
        if got is None:
            if what == "metric":
                pool: list[Rule] = self._by_metric.get(key, [])
            elif what == "type":
                pool = self._by_type.get(key, [])
            else:  # absence rules that a message of this type ends
                pool = [r for r in self._absence if getattr(r.when, "message_type", None) in (None, key)]
            got = tuple(
                (r, bool(r.match.sites or r.match.devices or r.match.subtypes))
                for r in pool
                if not r.match.kinds or kind in r.match.kinds
            )
            self._index[(what, key, kind)] = got
        return got

    def _rest(self, rule: Rule, site: str, device: str) -> bool:
        """The match beyond the kind (site, device, the asset's subtype)."""
        m = rule.match
        return (
            (not m.sites or site in m.sites)
            and (not m.devices or device in m.devices)
            and (not m.subtypes or self.subtype_of(device) in m.subtypes)
        )

    def matches(self, rule: Rule, site: str, kind: str, device: str) -> bool:
        m = rule.match
        return (
            (not m.sites or site in m.sites)
            and (not m.kinds or kind in m.kinds)
            and (not m.devices or device in m.devices)
            and (not m.subtypes or self.subtype_of(device) in m.subtypes)
        )

    def forget_timers(self) -> None:
        """Drop what the timer would look at next (when the state lives in the database, which says what is due)."""
        self._unscheduled.clear()
        self._waiting.clear()
        self._due.clear()
        self._scheduled.clear()

    def reschedule(self, devices: Iterable[str]) -> None:
        """Look again at which absence rules apply to ``devices`` (their asset's subtype changed)."""
        self._unscheduled.update(d for d in devices if d in self.seen)

    def watches(self, metric: str) -> bool:
        """Whether a rule looks at ``metric`` (a reading of any other only tells that its device was heard)."""
        return metric in self._by_metric

    def heard(self, device: str, site: str, kind: str) -> None:
        """``device`` sent something no rule looks at: it is still known (absence rules apply to it)."""
        self._see(device, site, kind)

    def _see(self, device: str, site: str, kind: str) -> None:
        if self.seen.get(device) != (site, kind):  # new, or moved, or its kind changed: which rules apply?
            self._unscheduled.add(device)
            self.seen[device] = (site, kind)

    def _st(self, rule: Rule, device: str) -> State:
        key = (rule.id, device)
        st = self.state.get(key)
        if st is None:
            st = self.state[key] = State()
        return st

    def _flip(
        self,
        out: list[Transition],
        rule: Rule,
        device: str,
        site: str,
        st: State,
        active: bool,
        at: int,
        value: Any,
        reason: str,
    ) -> None:
        st.active = active
        st.since_ms = at
        st.pending_ms = None
        self._waiting.discard((rule.id, device))
        out.append(Transition(rule, device, site, active, at, value, reason))

    # --- observations ------------------------------------------------------------------------------

    def observe_reading(
        self, site: str, kind: str, device: str, metric: str, value: float, at: int
    ) -> list[Transition]:
        self._see(device, site, kind)
        out: list[Transition] = []
        state = self.state
        evaluated = 0
        for rule, check in self._pick("metric", metric, kind):
            if check and not self._rest(rule, site, device):
                continue
            evaluated += 1
            key = (rule.id, device)
            st = state.get(key)
            if st is None:
                st = state[key] = State()
            c = rule.when
            if isinstance(c, Threshold):
                self._threshold(out, rule, c, device, site, st, value, at)
            else:
                self._rate(out, rule, c, device, site, st, value, at)  # type: ignore[arg-type]
        self.evaluations += evaluated
        if out:
            out += self._combine(device, site, kind, at)
        return out

    def observe_message(
        self, site: str, kind: str, device: str, type_: str, body: dict[str, Any], at: int
    ) -> list[Transition]:
        self._see(device, site, kind)
        out: list[Transition] = []
        for rule, check in self._pick("absence", type_, kind):  # anything from the device ends its silence
            if not check or self._rest(rule, site, device):
                st = self._st(rule, device)
                st.last_ms = at if st.last_ms is None else max(st.last_ms, at)
                if st.active:
                    self._flip(out, rule, device, site, st, False, at, None, f"{type_} received")
        for rule, check in self._pick("type", type_, kind):
            c = rule.when
            assert isinstance(c, Change)
            if check and not self._rest(rule, site, device):
                continue
            self.evaluations += 1
            st = self._st(rule, device)
            if st.stale(at):
                continue
            value = _dig(body, c.field)
            if not st.active and value == c.to:
                self._flip(out, rule, device, site, st, True, at, value, f"{c.field} became {value!r}")
            elif st.active and (value == c.clear_on if c.clear_on is not None else value != c.to):
                self._flip(out, rule, device, site, st, False, at, value, f"{c.field} is {value!r}")
        if out:
            out += self._combine(device, site, kind, at)
        return out

    def tick(self, now: int, devices: Iterable[tuple[str, str, str]] = (), *, loaded: bool = False) -> list[Transition]:
        """Timer: absence, and threshold durations that elapsed with no new reading.
        ``devices`` (device, site, kind) adds registered devices never heard from. ``loaded``: the state holds
        just what the database found due for these devices (:mod:`cloud.rules.shared`): look at all of it."""
        for d, s, k in devices:
            self._see(d, s, k)
        out: list[Transition] = []
        if loaded:
            self._unscheduled.clear()  # the database keeps the times; nothing is scheduled here
            for rule in self._absence:
                for device, (site, kind) in self.seen.items():
                    if self.matches(rule, site, kind, device):
                        self._absent(out, rule, device, site, now)
            waiting = [k for k, st in self.state.items() if st.pending_ms is not None and not st.active]
        else:
            self._schedule(now)
            while self._due and self._due[0][0] <= now:
                _when, rule_id, device = heapq.heappop(self._due)
                absence = self._by_id.get(rule_id)
                site, kind = self.seen.get(device, ("", ""))
                if absence is None or device not in self.seen or not self.matches(absence, site, kind, device):
                    self._scheduled.discard((rule_id, device))  # a rule since removed, or no longer this device's
                    continue
                silent = self._absent(out, absence, device, site, now)
                after = max(1, int(absence.when.after_s * 1000))  # type: ignore[union-attr]
                # next look: when its silence would last long enough (the device spoke since), else (raised, or
                # raised now) a whole period on: it stays raised until the device speaks, whatever the heap says
                last = silent.last_ms if silent.last_ms is not None else now
                nxt = last + after if last + after > now else now + after
                heapq.heappush(self._due, (nxt, rule_id, device))
            waiting = list(self._waiting)
        for rule_id, device in waiting:
            pending = self.state.get((rule_id, device))
            pending_rule = self._by_id.get(rule_id)
            if pending is None or pending.pending_ms is None or pending.active or pending_rule is None:
                self._waiting.discard((rule_id, device))
                continue
            if isinstance(pending_rule.when, Threshold) and now - pending.pending_ms >= pending_rule.when.for_s * 1000:
                th = pending_rule.when
                site, _kind = self.seen.get(device, ("", ""))
                self._flip(
                    out,
                    pending_rule,
                    device,
                    site,
                    pending,
                    True,
                    now,
                    pending.last_value,
                    f"{th.metric} beyond the limit for {th.for_s:g} s",
                )
        for device, (site, kind) in {t.device: self.seen[t.device] for t in out if t.device in self.seen}.items():
            out += self._combine(device, site, kind, now)
        return out

    # --- kinds -------------------------------------------------------------------------------------

    def _threshold(
        self, out: list[Transition], rule: Rule, c: Threshold, device: str, site: str, st: State, v: float, at: int
    ) -> None:
        if st.seen_ms is not None and at < st.seen_ms:  # State.stale, inline: this runs for every reading
            return
        st.seen_ms = at
        st.last_value = v
        if c.above is not None:
            breach, clear = v > c.above, v <= (c.clear_at if c.clear_at is not None else c.above)
        else:
            assert c.below is not None
            breach, clear = v < c.below, v >= (c.clear_at if c.clear_at is not None else c.below)
        if st.active:
            if clear:
                self._flip(out, rule, device, site, st, False, at, v, f"{c.metric} {v:g} back within limits")
            return
        if not breach:
            if st.pending_ms is not None:
                st.pending_ms = None
                self._waiting.discard((rule.id, device))
            return
        if st.pending_ms is None:
            st.pending_ms = at
            self._waiting.add((rule.id, device))
        if at - st.pending_ms >= c.for_s * 1000:
            limit = c.above if c.above is not None else c.below
            self._flip(out, rule, device, site, st, True, at, v, f"{c.metric} {v:g} beyond {limit:g}")

    def _rate(
        self, out: list[Transition], rule: Rule, c: Rate, device: str, site: str, st: State, v: float, at: int
    ) -> None:
        w = st.window
        if w and w[-1][0] - at > c.window_s * 1000:
            return  # older than the whole window
        bisect.insort(w, (at, v))
        newest = w[-1][0]
        while w and newest - w[0][0] > c.window_s * 1000:
            w.pop(0)
        if len(w) > MAX_WINDOW:  # a device that reports very often: every other point is plenty for a rate
            w[:] = [*w[:-1:2], w[-1]]
        if len(w) < 2 or w[-1][0] == w[0][0]:
            return
        per_min = (w[-1][1] - w[0][1]) / ((w[-1][0] - w[0][0]) / 60_000)
        if not math.isfinite(per_min):
            return
        fast = per_min > c.rise_per_min if c.rise_per_min is not None else per_min < -(c.fall_per_min or 0)
        if fast and not st.active:
            self._flip(out, rule, device, site, st, True, at, per_min, f"{c.metric} changing {per_min:+.2f}/min")
        elif not fast and st.active:
            self._flip(out, rule, device, site, st, False, at, per_min, f"{c.metric} rate back to {per_min:+.2f}/min")

    def _schedule(self, now: int) -> None:
        """Put the absence of devices heard of since the last tick into the heap (their silence counts from
        their last message, or from now when there was none)."""
        for device in self._unscheduled:
            site, kind = self.seen[device]
            for rule in self._absence:
                if (rule.id, device) in self._scheduled or not self.matches(rule, site, kind, device):
                    continue
                st = self._st(rule, device)
                if st.last_ms is None:  # first learned of now: its silence counts from here
                    st.last_ms = now
                self._scheduled.add((rule.id, device))
                heapq.heappush(self._due, (st.last_ms + max(1, int(rule.when.after_s * 1000)), rule.id, device))  # type: ignore[union-attr]
        self._unscheduled.clear()

    def _absent(self, out: list[Transition], rule: Rule, device: str, site: str, now: int) -> State:
        """Raise ``rule``'s absence for ``device`` when its silence has lasted long enough."""
        a = rule.when
        assert isinstance(a, Absence)
        st = self._st(rule, device)
        if st.last_ms is None:  # first learned of now: its silence counts from here
            st.last_ms = now
        last = st.last_ms
        if not st.active and now - last >= a.after_s * 1000:
            self._flip(
                out, rule, device, site, st, True, now, (now - last) / 1000, f"nothing for {(now - last) / 1000:.0f} s"
            )
        return st

    def _combine(self, device: str, site: str, kind: str, at: int) -> list[Transition]:
        out: list[Transition] = []
        for rule in self._combos:
            c = rule.when
            assert isinstance(c, Combination)
            if not self.matches(rule, site, kind, device):
                continue
            parts = [self.state.get((rid, device)) for rid in c.all_of]
            st = self._st(rule, device)
            together = all(p is not None and p.active for p in parts)
            if together:
                times = [p.since_ms for p in parts if p is not None]
                together = max(times) - min(times) <= c.window_s * 1000
            if together and not st.active:
                self._flip(out, rule, device, site, st, True, at, None, f"{' and '.join(c.all_of)} together")
            elif not together and st.active:
                self._flip(out, rule, device, site, st, False, at, None, "no longer together")
        return out

    def active(self) -> list[tuple[str, str]]:
        return [k for k, st in self.state.items() if st.active]
