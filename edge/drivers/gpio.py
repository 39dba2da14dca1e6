"""Digital I/O on the gateway's own GPIO pins through gpiozero (any pin factory, the mock one on a desk)."""

from __future__ import annotations

import asyncio
from typing import Any

from edge.drivers.io import IO, DriverError, GpioConfig


class GpioIO(IO):
    cfg: GpioConfig

    def __init__(self, cfg: GpioConfig) -> None:
        super().__init__(cfg)
        self._devs_out: dict[str, Any] = {}
        self._devs_in: dict[str, Any] = {}

    async def start(self) -> None:
        from gpiozero import DigitalInputDevice, DigitalOutputDevice
        from gpiozero.exc import GPIOZeroError

        loop = asyncio.get_running_loop()
        try:
            for name, pin in self.cfg.outputs.items():
                self._devs_out[name] = DigitalOutputDevice(pin, active_high=True, initial_value=False)
            for name, pin in self.cfg.inputs.items():
                dev = DigitalInputDevice(pin, pull_up=self.cfg.pull_up, bounce_time=None)
                self._devs_in[name] = dev

                def changed(_d: Any = None, ch: int = pin, d: Any = dev) -> None:
                    loop.call_soon_threadsafe(self._update_inputs, {ch: bool(d.pin.state)})

                dev.when_activated = changed
                dev.when_deactivated = changed
                self._update_inputs({pin: bool(dev.pin.state)})  # line level; ``invert`` names active-low inputs
        except GPIOZeroError as exc:
            raise DriverError(f"GPIO: {exc}") from None

    async def close(self) -> None:
        for d in [*self._devs_out.values(), *self._devs_in.values()]:
            d.close()

    async def set(self, output: str, on: bool) -> None:
        self._out(output)
        dev = self._devs_out[output]
        dev.on() if on else dev.off()
        self._outputs[output] = on

    async def pulse(self, output: str, seconds: float) -> None:
        self._out(output)
        dev = self._devs_out[output]
        self._outputs[output] = True
        dev.blink(on_time=seconds, off_time=0.01, n=1, background=True)
        asyncio.get_running_loop().call_later(seconds, self._outputs.__setitem__, output, False)
        if not dev.is_active:
            raise DriverError(f"GPIO output {output} did not switch on")
