"""Config ``type`` → unit class. A new unit adds its config to ``edge.config.UnitConfig`` and a line here."""

from __future__ import annotations

from edge.units.base import Unit
from edge.units.ticker import Ticker, TickerConfig


def build_unit(cfg: TickerConfig) -> Unit:
    if isinstance(cfg, TickerConfig):
        return Ticker(cfg)
    raise ValueError(f"no unit for config type {type(cfg).__name__}")
