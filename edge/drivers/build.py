"""The I/O driver a configuration names: GPIO lines on the gateway, an I/O board over serial, or a Modbus
module (each a :class:`edge.drivers.io.IO`)."""

from __future__ import annotations

from edge.drivers.config import GpioConfig, IOBoardConfig, ModbusConfig
from edge.drivers.io import IO


def build_io(cfg: GpioConfig | IOBoardConfig | ModbusConfig) -> IO:
    if isinstance(cfg, GpioConfig):
        from edge.drivers.gpio import GpioIO

        return GpioIO(cfg)
    if isinstance(cfg, IOBoardConfig):
        from edge.drivers.ioboard import IOBoardIO

        return IOBoardIO(cfg)
    from edge.drivers.modbus import ModbusIO

    return ModbusIO(cfg)
