"""A Modbus RTU device on one end of a simulated serial link: pymodbus's server on its own thread and event
loop, the device's state served through an action hook. Shared by the relay module, the gas detector and the
water meter bus simulators (the parking tower's PLC has its own, with a TCP option)."""

from __future__ import annotations

import asyncio
import threading

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import SimDevice

from simulators.serial_link import SerialLink


class RtuServer:
    """Serves ``devices`` on a new :class:`SerialLink`; the gateway opens ``port`` (its ``b`` end)."""

    def __init__(self, devices: SimDevice | list[SimDevice], name: str, baud: int = 9600) -> None:
        self.link = SerialLink()
        self.port = self.link.b
        self._devices, self._baud = devices, baud
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError(f"the {name} simulator did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self.server = ModbusSerialServer(self._devices, port=self.link.a, baudrate=self._baud)
            await self.server.serve_forever(background=True)
            self._ready.set()
            self._stopped = asyncio.Event()
            await self._stopped.wait()
            await self.server.shutdown()  # type: ignore[no-untyped-call]

        self._loop.run_until_complete(main())

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(5)
        self.link.close()
