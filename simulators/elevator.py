"""The elevator car as its board's sensors see it: height, speed, doors, door zone, load, a person inside, the
alarm button, mains power — written to the car board's sensor file at 20 Hz while a script plays (trips,
door cycles, and the faults the monitor must catch). Blocking methods: call them from a thread."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from simulators.firmware import FirmwareBoard


@dataclass
class CarState:
    height_m: float = 0.0
    speed_ms: float = 0.0
    door: bool = True
    person: bool = False
    load_kg: float = 0.0
    alarm: bool = False
    power: bool = True


class ElevatorWorld:
    def __init__(self, board: FirmwareBoard, floors: int = 6, floor_height_m: float = 3.0, speed_ms: float = 3.0):
        self.board, self.floors, self.h, self.speed = board, floors, floor_height_m, speed_ms
        self.car = CarState()
        self.dt = 0.05
        self._write()

    def zone(self) -> bool:
        return abs(self.car.height_m - round(self.car.height_m / self.h) * self.h) < 0.05

    def _write(self) -> None:
        c = self.car
        self.board.set_sensors(
            {
                "zone": self.zone(),
                "door": c.door,
                "height_cm": c.height_m * 100,
                "speed_cms": c.speed_ms * 100,
                "load_kg": c.load_kg,
                "person": c.person,
                "alarm": c.alarm,
                "power": 1 if c.power else 0,
            }
        )

    def hold(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._write()
            time.sleep(self.dt)

    def doors(self, open_: bool) -> None:
        self.car.door = open_
        self.hold(0.2)

    def move_to(self, height_m: float, speed_ms: float | None = None, doors_open: bool = False) -> None:
        v = speed_ms or self.speed
        sign = 1 if height_m > self.car.height_m else -1
        self.car.door = doors_open
        while abs(height_m - self.car.height_m) > v * self.dt:
            self.car.speed_ms = sign * v
            self.car.height_m += sign * v * self.dt
            self._write()
            time.sleep(self.dt)
        self.car.height_m, self.car.speed_ms = height_m, 0.0
        self._write()

    def trip(self, floor: int, person: bool = True, dwell_s: float = 0.3, speed_ms: float | None = None) -> None:
        """Board, close, ride, arrive, open, get out."""
        self.car.person, self.car.load_kg = person, 75.0 if person else 0.0
        self.doors(False)
        self.move_to(floor * self.h, speed_ms)
        self.doors(True)
        self.hold(dwell_s)
        self.car.person, self.car.load_kg = False, 0.0
        self.hold(0.1)

    def state(self) -> dict[str, object]:
        return asdict(self.car)
