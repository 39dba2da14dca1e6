"""Digital I/O for site units: named outputs (locks, barrier motors, relays) and inputs (door contact, fire
alarm, exit button, vehicle loop). One interface, three back-ends chosen by ``type`` in the config:

* ``gpio``: the gateway's own pins through gpiozero (``GPIOZERO_PIN_FACTORY=mock`` on a desk);
* ``ioboard``: the project's I/O board over USB serial, speaking ``protocol.serial_frame``;
* ``modbus``: a Modbus RTU relay module (coils = outputs, discrete inputs = inputs).

A controller that does not answer raises ``DriverError``: units treat that as "cannot open" (fail secure).
"""

from __future__ import annotations

import abc
import asyncio
import logging

from edge.drivers.config import GpioConfig, IOBoardConfig, IOConfig, ModbusConfig, _Cfg

log = logging.getLogger("civicedge.edge.drivers")
__all__ = ["IO", "DriverError", "GpioConfig", "IOBoardConfig", "IOConfig", "ModbusConfig"]


class DriverError(RuntimeError):
    """The controller did not answer or refused; the reason is for logs and alarms."""


class IO(abc.ABC):
    def __init__(self, cfg: _Cfg) -> None:
        self.cfg = cfg
        self.changes: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        self._inputs: dict[str, bool] = dict.fromkeys(cfg.inputs, False)
        self._outputs: dict[str, bool] = dict.fromkeys(cfg.outputs, False)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open the device and read the current input state."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device."""

    @abc.abstractmethod
    async def set(self, output: str, on: bool) -> None: ...

    @abc.abstractmethod
    async def pulse(self, output: str, seconds: float) -> None:
        """Switch an output on now and off after ``seconds`` (timed by the controller where it can)."""

    def input(self, name: str) -> bool:
        return self._inputs[name]

    def output(self, name: str) -> bool:
        return self._outputs[name]

    def _out(self, name: str) -> int:
        if name not in self.cfg.outputs:
            raise DriverError(f"no output named {name!r}; configured: {sorted(self.cfg.outputs)}")
        return self.cfg.outputs[name]

    def _update_inputs(self, raw: dict[int, bool]) -> None:
        """Raw line levels by channel → named, inverted where configured; queue the changes."""
        for name, ch in self.cfg.inputs.items():
            if ch not in raw:
                continue
            value = raw[ch] != (name in self.cfg.invert)
            if value != self._inputs[name]:
                self._inputs[name] = value
                self.changes.put_nowait((name, value))
