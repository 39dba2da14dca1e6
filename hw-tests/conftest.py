"""Hardware-in-the-loop: ``pytest hw-tests --rig RIG.yaml`` runs these tests against the devices a rig file
names (I/O board on /dev/ttyUSB0, a relay module, the tower PLC, a camera, a MicroPython board); without
``--rig`` every piece is a simulator, and that run is part of ``make test``.

Each test says what it needs with ``@pytest.mark.hardware("ioboard", …)``. A rig without a piece does not run
the tests that need it; the summary table at the end lists every test with the hardware it used (real or
simulated) or the reason it did not run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PIECES = ("ioboard", "modbus_relay", "plc", "camera", "micropython_board")


class IOBoardRig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: str
    baud: int = 115200
    relay: int = Field(0, ge=0, le=15, description="an output channel free to switch on the rig")
    loopback_input: int | None = Field(None, ge=0, le=15, description="input wired to that relay's contact")


class ModbusRelayRig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: str
    baud: int = 9600
    unit_id: int = Field(1, ge=1, le=247)
    coil: int = 0


class PlcRig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transport: dict[str, Any] = Field(description="{type: rtu, port: …} or {type: tcp, host: …, port: 502}")
    unit_id: int = Field(1, ge=1, le=247)
    lifts: int = Field(1, ge=1)


class CameraRig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = 0
    min_fps: float = 10.0


class BoardRig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: str


class Rig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "simulated"
    ioboard: IOBoardRig | None = None
    modbus_relay: ModbusRelayRig | None = None
    plc: PlcRig | None = None
    camera: CameraRig | None = None
    micropython_board: BoardRig | None = None


@dataclass
class Bench:
    """What a test gets: the rig description (real or simulated) and the simulators behind it, if any."""

    rig: Rig
    simulated: bool
    sims: dict[str, Any] = field(default_factory=dict)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rig", type=Path, default=None, help="rig file (YAML) naming real hardware; default: simulators")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardware(*pieces): the rig pieces a test needs (" + ", ".join(PIECES) + ")")
    path = config.getoption("--rig", default=None)
    rig = None
    if path is not None:
        try:
            rig = Rig.model_validate(yaml.safe_load(Path(path).read_text()) or {})
        except OSError as exc:
            raise pytest.UsageError(f"cannot read the rig file {path}: {exc.strerror}") from None
        except (ValidationError, yaml.YAMLError) as exc:
            raise pytest.UsageError(f"the rig file {path} is not valid: {exc}") from None
    config.stash[_RIG] = rig
    config.stash[_ROWS] = []


_RIG = pytest.StashKey[Rig | None]()
_ROWS = pytest.StashKey[list[tuple[str, str, str, str]]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rig = config.stash[_RIG]
    for item in items:
        m = item.get_closest_marker("hardware")
        if m is None or rig is None:
            continue
        missing = [p for p in m.args if getattr(rig, p, None) is None]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"not run: rig {rig.name!r} has no {', '.join(missing)}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    m = item.get_closest_marker("hardware")
    if m is None or (rep.when != "call" and not (rep.when == "setup" and rep.outcome != "passed")):
        return
    rig = item.config.stash[_RIG]
    where = "simulated" if rig is None else "real"
    reason = ""
    if rep.skipped and isinstance(rep.longrepr, tuple):
        reason = str(rep.longrepr[2]).removeprefix("Skipped: ")
        where = "—"
    elif rep.failed:
        reason = str(rep.longrepr).strip().splitlines()[-1][:80] if rep.longrepr else "failed"
    item.config.stash[_ROWS].append(
        (item.name, ", ".join(m.args), where, rep.outcome + (f": {reason}" if reason else ""))
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    rig = config.stash[_RIG]
    tr = terminalreporter
    tr.section(f"hardware-in-the-loop: {rig.name if rig else 'simulators (no --rig)'}")
    w = max(len(r[0]) for r in rows)
    h = max(len(r[1]) for r in rows)
    tr.write_line(f"{'test':<{w}}  {'needs':<{h}}  {'hardware':<9}  result")
    for name, needs, where, result in rows:
        tr.write_line(f"{name:<{w}}  {needs:<{h}}  {where:<9}  {result}")
    out = config.rootpath / "build" / "test-artifacts" / "hil-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps([dict(zip(("test", "needs", "hardware", "result"), r, strict=True)) for r in rows], indent=1)
    )


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    rig = request.config.stash[_RIG]
    if rig is not None:
        yield Bench(rig, simulated=False)
        return
    from simulators.ioboard import IOBoardSim
    from simulators.modbus_relay import ModbusRelaySim
    from simulators.mpboard import MPBoard
    from simulators.parking_tower import Tower

    board = IOBoardSim()
    relay = ModbusRelaySim()
    tower = Tower(lifts=1, floors=4, bays=2)
    mp = MPBoard()
    sims = {"ioboard": board, "modbus_relay": relay, "plc": tower, "micropython_board": mp}
    simulated = Rig(
        ioboard=IOBoardRig(port=board.port, relay=0),
        modbus_relay=ModbusRelayRig(port=relay.port, baud=115200),
        plc=PlcRig(transport={"type": "rtu", "port": tower.port, "baud": 115200}, lifts=1),
        camera=CameraRig(index=-1),  # the simulated camera
        micropython_board=BoardRig(port=mp.port),
    )
    try:
        yield Bench(simulated, simulated=True, sims=sims)
    finally:
        for s in sims.values():
            s.close()
