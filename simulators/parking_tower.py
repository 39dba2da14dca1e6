"""A multi-storey parking tower with lift cars and carrier robots, exposed as a PLC over Modbus (RTU on a
serial link, or TCP), with the register map of ``protocol.parking``.

Kinematics: each lift moves with a trapezoidal profile (speed, acceleration, floor height); the carrier's shift
into a bay and back, the handover at the entrance/exit bay and the doors take fixed times. Time runs ``speed``
times faster than the wall clock (``now()`` is tower time) so a peak hour can be simulated in a minute; the
gateway's code runs unchanged against it.

Faults are injected by the test or the benchmark: an interlock opens (door, person in the bay, over-travel,
motor), an e-stop, an over-size vehicle at the entrance, or the serial line goes quiet (``link.cut``). Any open
interlock stops motion at once (state ``fault``/``estop``); the job resumes only after a RESET command with every
interlock closed again.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocol import parking as p
from simulators.serial_link import SerialLink

READ_INPUT_REGISTERS = 4
WRITE_SINGLE, WRITE_MULTIPLE = 6, 16


@dataclass
class Kinematics:
    floor_height_m: float = 2.4
    speed_mps: float = 2.0
    accel_mps2: float = 0.8
    shift_s: float = 9.0  # carrier into a bay and back, each way
    handover_s: float = 12.0  # car onto / off the carrier at the entrance or exit bay
    door_s: float = 5.0
    max_len_cm: int = 520
    max_height_cm: int = 205

    def travel_s(self, floors: float) -> float:
        d = abs(floors) * self.floor_height_m
        if d == 0:
            return 0.0
        if d < self.speed_mps**2 / self.accel_mps2:
            return 2 * math.sqrt(d / self.accel_mps2)
        return d / self.speed_mps + self.speed_mps / self.accel_mps2


@dataclass
class _Phase:
    state: int
    duration: float
    to_floor: float | None = None  # moving phases
    then: str | None = None  # "load" / "unload" effects at the end


@dataclass
class Lift:
    index: int
    floor: float = 0.0
    state: int = p.STATE_IDLE
    phases: list[_Phase] = field(default_factory=list)
    phase_left: float = 0.0
    phase_from: float = 0.0
    job_seq: int = 0
    accepted_seq: int = 0
    done_seq: int = 0
    fault: int = 0
    interlocks: int = p.ALL_CLOSED
    vehicle: tuple[int, int] | None = None  # (length cm, height cm) in the entrance bay
    carrying: str | None = None
    target: tuple[int, int] | None = None
    result: int = p.RESULT_OK
    stopped: bool = False  # paused by a fault / e-stop / stop command until RESET
    current: _Phase | None = None


class Tower:
    def __init__(
        self,
        lifts: int = 2,
        floors: int = 10,
        bays: int = 6,
        kin: Kinematics | None = None,
        speed: float = 1.0,
        unit_id: int = 1,
        transport: str = "rtu",
    ) -> None:
        self.kin = kin or Kinematics()
        self.floors, self.bays, self.speed = floors, bays, speed
        self.lifts = [Lift(i) for i in range(lifts)]
        self.bay_cars: dict[tuple[int, int, int], str] = {}  # (lift, floor, bay) → car id
        self.hr = [0] * (p.BLOCK * lifts)
        self._t0_wall = time.monotonic()
        self._lock = threading.Lock()
        self.events: list[tuple[float, int, str]] = []  # (tower time, lift, what)
        self._car_seq = 0
        regs = [SimData(0, count=p.BLOCK * lifts, values=0, datatype=DataType.REGISTERS)]
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        self.device = SimDevice(id=unit_id, simdata=(bits, list(bits), list(regs), list(regs)), action=self._action)
        self.transport = transport
        self.link: SerialLink | None = None
        self.port: str | int
        if transport == "rtu":
            self.link = SerialLink()
            self.port = self.link.b
        self.host = "127.0.0.1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._server_thread = threading.Thread(target=self._serve, name="tower-modbus", daemon=True)
        self._server_thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the tower's Modbus server did not start")
        self._last = self.now()
        self._last_gateway = time.monotonic()
        self.gateway_watchdog_s = p.GATEWAY_WATCHDOG_S  # wall seconds of gateway silence before a safe stop
        self._sim_thread = threading.Thread(target=self._run, name="tower-sim", daemon=True)
        self._sim_thread.start()

    # --- time ----------------------------------------------------------------------------------------

    def now(self) -> float:
        """Tower time in seconds (wall time × speed)."""
        return (time.monotonic() - self._t0_wall) * self.speed

    # --- the Modbus side -----------------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            if self.transport == "rtu":
                assert self.link is not None
                self.server: Any = ModbusSerialServer(self.device, port=self.link.a, baudrate=115200)
            else:
                import socket

                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
                s.close()
                self.port = port
                self.server = ModbusTcpServer(self.device, address=("127.0.0.1", port))
            await self.server.serve_forever(background=True)
            self._ready.set()
            self._stopped = asyncio.Event()
            await self._stopped.wait()
            await self.server.shutdown()

        self._loop.run_until_complete(main())

    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[int], values: list[Any] | None
    ) -> None:
        self._last_gateway = time.monotonic()
        with self._lock:
            if fc == READ_INPUT_REGISTERS:
                for i in range(count):
                    regs[address - start + i] = self._ir(address + i)
            elif fc in (WRITE_SINGLE, WRITE_MULTIPLE) and values is not None:
                for i, v in enumerate(values):
                    self._write(address + i, int(v))

    def _ir(self, addr: int) -> int:
        lift, off = divmod(addr, p.BLOCK)
        if lift >= len(self.lifts):
            return 0
        lf = self.lifts[lift]
        eta = max(lf.phase_left, 0) + sum(ph.duration for ph in lf.phases)
        return {
            p.IR_STATE: lf.state,
            p.IR_FLOOR: round(lf.floor),
            p.IR_POSITION_CM: int(lf.floor * self.kin.floor_height_m * 100),
            p.IR_ACCEPTED_SEQ: lf.accepted_seq,
            p.IR_DONE_SEQ: lf.done_seq,
            p.IR_FAULT: lf.fault,
            p.IR_INTERLOCKS: lf.interlocks,
            p.IR_VEHICLE: 1 if lf.vehicle else 0,
            p.IR_VEHICLE_LEN_CM: lf.vehicle[0] if lf.vehicle else 0,
            p.IR_VEHICLE_HEIGHT_CM: lf.vehicle[1] if lf.vehicle else 0,
            p.IR_HEARTBEAT: int(self.now() * 10) & 0xFFFF,
            p.IR_ETA_DS: min(0xFFFF, int(eta * 10)),
            p.IR_RESULT: lf.result,
        }.get(off, 0)

    def _write(self, addr: int, value: int) -> None:
        lift, off = divmod(addr, p.BLOCK)
        if lift >= len(self.lifts) or off >= p.SIZE:
            return
        self.hr[addr] = value
        if off == p.HR_SEQ:
            b = p.base(lift)
            self._command(
                self.lifts[lift], self.hr[b + p.HR_COMMAND], self.hr[b + p.HR_FLOOR], self.hr[b + p.HR_BAY], value
            )

    def _refuse(self, lf: Lift, seq: int, fault: int) -> None:
        lf.accepted_seq, lf.result = seq, p.RESULT_REFUSED
        lf.fault = fault
        self.events.append((self.now(), lf.index, f"refused:{p.FAULTS[fault]}"))

    def _command(self, lf: Lift, cmd: int, floor: int, bay: int, seq: int) -> None:
        k = self.kin
        if cmd == p.CMD_RESET:
            lf.accepted_seq, lf.result = seq, p.RESULT_OK
            if lf.interlocks == p.ALL_CLOSED:
                lf.stopped, lf.fault = False, 0
                lf.state = lf.current.state if lf.current is not None else p.STATE_IDLE
                self.events.append((self.now(), lf.index, "reset"))
            else:
                lf.result = p.RESULT_REFUSED
            return
        if cmd == p.CMD_STOP:
            lf.accepted_seq, lf.result, lf.stopped = seq, p.RESULT_OK, True
            lf.state = p.STATE_FAULT
            return
        if lf.stopped or lf.current is not None or lf.state != p.STATE_IDLE:
            self._refuse(lf, seq, lf.fault)
            return
        if cmd in (p.CMD_STORE, p.CMD_RETRIEVE) and not (0 <= floor < self.floors and 1 <= bay <= self.bays):
            self._refuse(lf, seq, 0)
            return
        if cmd == p.CMD_STORE:
            if lf.vehicle is None:
                self._refuse(lf, seq, 0)
                return
            ln, ht = lf.vehicle
            if ln > k.max_len_cm or ht > k.max_height_cm:
                self._refuse(lf, seq, p.FAULTS.index("oversize"))
                return
            if (lf.index, floor, bay) in self.bay_cars:
                self._refuse(lf, seq, p.FAULTS.index("bay_occupied"))
                return
            phases = [
                _Phase(p.STATE_HANDING_OVER, k.door_s + k.handover_s, then="load_entrance"),
                _Phase(p.STATE_MOVING, k.travel_s(floor - 0), to_floor=float(floor)),
                _Phase(p.STATE_HANDING_OVER, 2 * k.shift_s, then="unload_bay"),
            ]
            if lf.floor != 0:
                phases.insert(0, _Phase(p.STATE_MOVING, k.travel_s(lf.floor), to_floor=0.0))
        elif cmd == p.CMD_RETRIEVE:
            if (lf.index, floor, bay) not in self.bay_cars:
                self._refuse(lf, seq, 0)
                return
            phases = [
                _Phase(p.STATE_MOVING, k.travel_s(floor - lf.floor), to_floor=float(floor)),
                _Phase(p.STATE_HANDING_OVER, 2 * k.shift_s, then="load_bay"),
                _Phase(p.STATE_MOVING, k.travel_s(floor), to_floor=0.0),
                _Phase(p.STATE_HANDING_OVER, k.handover_s + k.door_s, then="unload_exit"),
            ]
        elif cmd == p.CMD_MOVE:
            if not 0 <= floor < self.floors:
                self._refuse(lf, seq, 0)
                return
            phases = [_Phase(p.STATE_MOVING, k.travel_s(floor - lf.floor), to_floor=float(floor))]
        else:
            self._refuse(lf, seq, 0)
            return
        lf.accepted_seq, lf.result, lf.fault = seq, p.RESULT_OK, 0
        lf.job_seq, lf.target = seq, (floor, bay)
        lf.phases = phases
        self._next_phase(lf)

    def _next_phase(self, lf: Lift) -> None:
        if not lf.phases:
            lf.state, lf.phase_left, lf.current = p.STATE_IDLE, 0.0, None
            lf.done_seq = lf.job_seq
            self.events.append((self.now(), lf.index, f"done:{lf.job_seq}"))
            return
        ph = lf.phases.pop(0)
        lf.state, lf.phase_left, lf.phase_from, lf.current = ph.state, ph.duration, lf.floor, ph

    def _end_phase(self, lf: Lift) -> None:
        ph = lf.current
        assert ph is not None
        if ph.to_floor is not None:
            lf.floor = ph.to_floor
        assert lf.target is not None
        floor, bay = lf.target
        if ph.then == "load_entrance":
            self._car_seq += 1
            lf.carrying, lf.vehicle = f"car-{self._car_seq}", None
        elif ph.then == "unload_bay":
            self.bay_cars[(lf.index, floor, bay)] = lf.carrying or "car"
            lf.carrying = None
        elif ph.then == "load_bay":
            lf.carrying = self.bay_cars.pop((lf.index, floor, bay), None)
        elif ph.then == "unload_exit":
            lf.carrying = None
        self._next_phase(lf)

    # --- the simulation ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            time.sleep(0.005)
            now = self.now()
            with self._lock:
                dt, self._last = now - self._last, now
                for lf in self.lifts:
                    self._step(lf, dt)

    def _step(self, lf: Lift, dt: float) -> None:
        silent = time.monotonic() - self._last_gateway > self.gateway_watchdog_s
        if silent and not lf.stopped and lf.current is not None:
            lf.stopped, lf.state, lf.fault = True, p.STATE_FAULT, p.FAULTS.index("gateway_lost")
            self.events.append((self.now(), lf.index, "stopped:gateway_lost"))
        if lf.interlocks != p.ALL_CLOSED and not lf.stopped and lf.current is not None:
            lf.stopped = True
            estop = not lf.interlocks & (1 << p.INTERLOCKS.index("estop_released"))
            lf.state = p.STATE_ESTOP if estop else p.STATE_FAULT
            opened = [n for i, n in enumerate(p.INTERLOCKS) if not lf.interlocks & (1 << i)]
            lf.fault = p.FAULTS.index("estop") if estop else _fault_for(opened[0])
            self.events.append((self.now(), lf.index, f"stopped:{opened[0]}"))
        ph = lf.current
        if lf.stopped or ph is None:
            return
        lf.phase_left -= dt
        if ph.to_floor is not None and ph.duration > 0:
            done = 1 - max(lf.phase_left, 0) / ph.duration
            lf.floor = lf.phase_from + (ph.to_floor - lf.phase_from) * done
        if lf.phase_left <= 0:
            self._end_phase(lf)

    # --- faults and vehicles (test side) ---------------------------------------------------------------

    def vehicle_arrives(self, lift: int, length_cm: int = 450, height_cm: int = 160) -> None:
        with self._lock:
            lf = self.lifts[lift]
            lf.vehicle = (length_cm, height_cm)
            size_bit = 1 << p.INTERLOCKS.index("size_ok")
            oversize = length_cm > self.kin.max_len_cm or height_cm > self.kin.max_height_cm
            lf.interlocks = (lf.interlocks & ~size_bit) if oversize else (lf.interlocks | size_bit)

    def vehicle_leaves_entrance(self, lift: int) -> None:
        with self._lock:
            lf = self.lifts[lift]
            lf.vehicle = None
            lf.interlocks |= 1 << p.INTERLOCKS.index("size_ok")

    def set_interlock(self, lift: int, name: str, closed: bool) -> None:
        with self._lock:
            bit = 1 << p.INTERLOCKS.index(name)
            lf = self.lifts[lift]
            lf.interlocks = (lf.interlocks | bit) if closed else (lf.interlocks & ~bit)

    def park(self, lift: int, floor: int, bay: int, car: str) -> None:
        """Put a car straight into a bay (initial occupancy)."""
        with self._lock:
            self.bay_cars[(lift, floor, bay)] = car

    def close(self) -> None:
        self._stop.set()
        self._sim_thread.join(2)
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._server_thread.join(5)
        if self.link:
            self.link.close()


def _fault_for(interlock: str) -> int:
    return {
        "door_closed": p.FAULTS.index("door_open"),
        "no_person": p.FAULTS.index("person_detected"),
        "size_ok": p.FAULTS.index("oversize"),
        "no_overtravel": p.FAULTS.index("overtravel"),
        "motor_ok": p.FAULTS.index("motor_fault"),
        "estop_released": p.FAULTS.index("estop"),
    }[interlock]
