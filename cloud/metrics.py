"""In-process counters and gauges, rendered in the Prometheus text format at ``/metrics``."""

from __future__ import annotations

import threading
from collections import defaultdict


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, n: float = 1, help: str = "", **labels: str) -> None:
        with self._lock:
            self.counters[(name, tuple(sorted(labels.items())))] += n
            if help:
                self.help.setdefault(name, help)

    def set(self, name: str, value: float, help: str = "", **labels: str) -> None:
        with self._lock:
            self.gauges[(name, tuple(sorted(labels.items())))] = value
            if help:
                self.help.setdefault(name, help)

    def get(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return self.counters.get(key, self.gauges.get(key, 0.0))

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for kind, table in (("counter", self.counters), ("gauge", self.gauges)):
                seen: set[str] = set()
                for (name, labels), value in sorted(table.items()):
                    if name not in seen:
                        seen.add(name)
                        if name in self.help:
                            lines.append(f"# HELP {name} {self.help[name]}")
                        lines.append(f"# TYPE {name} {kind}")
                    lab = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")
        return "\n".join(lines) + "\n"
