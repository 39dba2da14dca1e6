"""The MLX90640 driver against a register-level simulator of the sensor: the EEPROM calibration unpacked, both
subpages read, the known scene recovered; the same registers read by Adafruit's independent driver agree."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from edge.drivers.camera import Frame, WithThermal
from edge.drivers.io import DriverError
from edge.drivers.mlx90640 import CONTROL, MLX90640, Calibration, LinuxI2C
from edge.thermal.config import MLX90640Config
from simulators.mlx90640 import MLX90640Sim, Scene, face_scene

BROKEN = 101


def _cfg(**kw: Any) -> MLX90640Config:
    return MLX90640Config.model_validate({"type": "mlx90640", "refresh_hz": 64.0, **kw})


def _sim(scene: Scene, seed: int = 3) -> MLX90640Sim:
    return MLX90640Sim(seed=seed, broken_pixel=BROKEN, scene=scene)


def _good(t: np.ndarray) -> np.ndarray:
    return np.delete(t.reshape(-1), BROKEN)


def test_the_driver_recovers_a_known_scene_from_the_registers() -> None:
    truth = face_scene(ambient_c=22.0, face_c=34.5, canthus_c=35.6)
    sim = _sim(Scene(truth, ta_c=33.0))
    mlx = MLX90640(_cfg(), bus=sim)
    frame = mlx.read()
    assert frame.shape == (24, 32)
    err = np.abs(_good(frame.temps) - _good(truth))
    assert err.max() < 0.05, f"worst pixel {err.max():.3f} °C off"
    assert abs(mlx.ta - 33.0) < 0.05  # type: ignore[operator]
    assert mlx.ambient_c == pytest.approx(33.0 - 8.0, abs=0.05)
    # the broken pixel (an all-zero EEPROM word) is filled from its row neighbours
    assert mlx.calibration.bad.sum() == 1 and mlx.calibration.bad[BROKEN]
    r, c = divmod(BROKEN, 32)
    assert abs(frame.temps[r, c] - (truth[r, c - 1] + truth[r, c + 1]) / 2) < 0.06
    # the hot spot is where the scene has it
    assert np.unravel_index(int(np.argmax(frame.temps)), frame.shape) in ((10, 14), (10, 17))


def test_a_frame_holds_both_subpages_of_the_current_scene() -> None:
    sim = _sim(Scene(np.full((24, 32), 20.0), ta_c=30.0))
    mlx = MLX90640(_cfg(), bus=sim)
    assert np.allclose(_good(mlx.read().temps), 20.0, atol=0.05)
    before = sim.measured
    sim.scene = Scene(np.full((24, 32), 30.0), ta_c=30.0)
    frame = mlx.read()
    assert sim.measured - before >= 2  # at least one measurement of each subpage since the change
    assert np.allclose(_good(frame.temps), 30.0, atol=0.05), "a half of the frame is stale"


def test_the_configured_refresh_rate_and_chess_pattern_are_set() -> None:
    sim = _sim(Scene(face_scene()))
    MLX90640(_cfg(refresh_hz=16.0), bus=sim)
    assert (sim.control >> 7) & 0x7 == 5  # 16 Hz
    assert sim.control & 0x1000  # chess
    assert sim.read_words(0x33, CONTROL, 1) == [sim.control]


def test_emissivity_is_applied_as_configured() -> None:
    truth = face_scene(ambient_c=20.0, face_c=33.0, canthus_c=34.0)
    sim = _sim(Scene(truth, ta_c=28.0, emissivity=0.95))
    right = MLX90640(_cfg(emissivity=0.95), bus=sim).read()
    assert np.abs(_good(right.temps) - _good(truth)).max() < 0.05
    apparent = MLX90640(_cfg(emissivity=1.0), bus=sim).read()
    face = truth > 30
    # read as a black body, a skin-warm object looks cooler than it is (its reflection is of cooler surroundings)
    assert float((right.temps - apparent.temps)[face].mean()) > 0.1


def test_adafruit_driver_reads_the_same_registers_the_same_way() -> None:
    """An independent implementation of the datasheet (Adafruit's CircuitPython driver) over the same simulated
    registers agrees with this driver to within the ADC's quantisation."""
    adafruit = pytest.importorskip("adafruit_mlx90640", reason="dev extra: adafruit-circuitpython-mlx90640")
    truth = face_scene(ambient_c=24.0, face_c=34.0, canthus_c=35.2)
    sim = _sim(Scene(truth, ta_c=31.0, emissivity=0.95), seed=8)

    class Bus:  # the busio.I2C calls Adafruit's I2CDevice makes, onto the simulator's registers
        def try_lock(self) -> bool:
            return True

        def unlock(self) -> None:
            return None

        def writeto(self, address: int, buf: bytes, *, start: int = 0, end: int | None = None) -> None:
            data = bytes(buf[start:end])
            if len(data) == 4:
                sim.write_word(address, int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big"))
            elif data and len(data) != 2:
                raise OSError(5, "unexpected write")

        def readfrom_into(self, address: int, buf: bytearray, *, start: int = 0, end: int | None = None) -> None:
            raise OSError(5, "a read needs a register address first")

        def writeto_then_readfrom(
            self,
            address: int,
            out: bytes,
            into: bytearray,
            *,
            out_start: int = 0,
            out_end: int | None = None,
            in_start: int = 0,
            in_end: int | None = None,
        ) -> None:
            reg = int.from_bytes(bytes(out[out_start:out_end]), "big")
            n = ((in_end if in_end is not None else len(into)) - in_start) // 2
            words = sim.read_words(address, reg, n)
            into[in_start : in_start + 2 * n] = b"".join(w.to_bytes(2, "big") for w in words)

        def scan(self) -> list[int]:
            return [sim.address]

    theirs = adafruit.MLX90640(Bus())
    theirs.refresh_rate = adafruit.RefreshRate.REFRESH_64_HZ
    buf = [0.0] * 768
    theirs.getFrame(buf)  # emissivity 0.95, reflected = Ta − 8 °C: the scene's own
    ours = MLX90640(_cfg(emissivity=0.95, refresh_hz=64.0), bus=sim).read()
    theirs_t = np.array(buf).reshape(24, 32)
    assert theirs_t.reshape(-1)[BROKEN] == pytest.approx(-273.15)  # they mark the broken pixel
    assert np.abs(_good(theirs_t) - _good(truth)).max() < 0.05
    assert np.abs(_good(theirs_t) - _good(ours.temps)).max() < 0.02


def test_errors_name_the_problem() -> None:
    with pytest.raises(DriverError, match="raspi-config"):
        LinuxI2C(97)  # no such bus on this machine
    sim = _sim(Scene(face_scene()))
    with pytest.raises(DriverError, match="does not answer"):
        MLX90640(_cfg(address=0x34), bus=sim)
    ee = sim.eeprom[:]
    for p in range(5):  # five faulty pixels: the datasheet allows four
        ee[64 + 200 + 3 * p] = 0
    with pytest.raises(DriverError, match="faulty pixels"):
        Calibration.from_eeprom(ee)
    zero_gain = sim.eeprom[:]
    zero_gain[48] = 0
    with pytest.raises(DriverError, match="wiring"):
        Calibration.from_eeprom(zero_gain)
    mlx = MLX90640(_cfg(), bus=sim)
    sim.ram[778] = 0  # a gain word read as zero (noise on the bus)
    with pytest.raises(DriverError, match="implausible RAM"):
        mlx.calibration.temperatures(list(sim.ram), sim.control, 0, 1.0)
    assert sim.control & 0x0001 and not sim.control & 0x0008  # subpages alternate, none repeated


async def test_each_rgb_frame_carries_the_newest_thermal_burst_and_the_sensor_ambient() -> None:
    sim = _sim(Scene(face_scene(), ta_c=30.0))
    mlx = MLX90640(_cfg(refresh_hz=64.0), bus=sim)

    class Rgb:
        async def read(self) -> Frame:
            await asyncio.sleep(0.05)
            return Frame(np.zeros((480, 640, 3), np.uint8), ts=time.monotonic())

        async def close(self) -> None:
            return None

    source = WithThermal(Rgb(), mlx, keep=3)
    try:
        for _ in range(100):
            frame = await source.read()
            if len(frame.thermal) == 3:
                break
        assert len(frame.thermal) == 3 and all(f.shape == (24, 32) for f in frame.thermal)
        assert frame.ambient_c == pytest.approx(22.0, abs=0.05)  # Ta 30 °C − 8 °C
        assert frame.ts is not None and all(frame.ts - f.t <= source.max_age_s for f in frame.thermal)
        sim.address = 0x40  # the array stops answering: its frames age out, none are attached
        await asyncio.sleep(source.max_age_s + 0.3)
        frame = await source.read()
        assert frame.thermal == [] and frame.ambient_c is None
        assert (source.error is not None and "does not answer" in source.error) or "I/O" in (source.error or "")
    finally:
        sim.address = 0x33
        await source.close()


async def test_an_array_that_does_not_answer_yet_is_opened_later_while_the_camera_works() -> None:
    sim = _sim(Scene(face_scene(), ta_c=30.0))
    attempts: list[int] = []

    def opener() -> MLX90640:
        attempts.append(1)
        if len(attempts) < 2:
            raise DriverError("/dev/i2c-1 does not exist: enable I2C")
        return MLX90640(_cfg(), bus=sim)

    class Rgb:
        async def read(self) -> Frame:
            await asyncio.sleep(0.05)
            return Frame(np.zeros((48, 64, 3), np.uint8), ts=time.monotonic())

        async def close(self) -> None:
            return None

    source = WithThermal(Rgb(), None, keep=2, opener=opener)
    try:
        first = await source.read()
        assert first.rgb.shape == (48, 64, 3) and first.thermal == []  # the camera works while the array does not
        assert source.error is not None and "enable I2C" in source.error
        for _ in range(100):
            frame = await source.read()
            if frame.thermal:
                break
        assert frame.thermal and len(attempts) == 2 and source.error is None
    finally:
        await source.close()
