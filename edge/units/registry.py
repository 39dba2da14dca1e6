"""Config ``type`` → unit class. A new unit adds its config to ``edge.config.UnitConfig`` and a line here."""

from __future__ import annotations

from typing import Any

from edge.units.barrier_config import BarrierConfig
from edge.units.base import Unit
from edge.units.community_config import GasConfig, PerimeterConfig, ThrowingConfig, WaterConfig
from edge.units.elevator_config import ElevatorConfig
from edge.units.gate_config import GateConfig
from edge.units.parking_config import ParkingLiftConfig
from edge.units.ticker import Ticker, TickerConfig


def build_unit(cfg: Any) -> Unit:
    if isinstance(cfg, TickerConfig):
        return Ticker(cfg)
    if isinstance(cfg, GateConfig):
        from edge.units.gate import GateUnit  # loads the vision models' code only where a gate runs

        return GateUnit(cfg)
    if isinstance(cfg, BarrierConfig):
        from edge.units.barrier import BarrierUnit

        return BarrierUnit(cfg)
    if isinstance(cfg, ParkingLiftConfig):
        from edge.units.parking_lift import ParkingLiftUnit

        return ParkingLiftUnit(cfg)
    if isinstance(cfg, ElevatorConfig):
        from edge.units.elevator import ElevatorUnit

        return ElevatorUnit(cfg)
    if isinstance(cfg, GasConfig):
        from edge.units.gas import GasUnit

        return GasUnit(cfg)
    if isinstance(cfg, PerimeterConfig):
        from edge.units.perimeter import PerimeterUnit

        return PerimeterUnit(cfg)
    if isinstance(cfg, ThrowingConfig):
        from edge.units.throwing import ThrowingUnit

        return ThrowingUnit(cfg)
    if isinstance(cfg, WaterConfig):
        from edge.units.water import WaterUnit

        return WaterUnit(cfg)
    raise ValueError(f"no unit for config type {type(cfg).__name__}")
