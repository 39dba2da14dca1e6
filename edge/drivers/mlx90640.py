"""The MLX90640 thermal array (32×24 pixels on I²C, address 0x33): a register-level driver following the
datasheet's calibration, behind the ``ThermalSource`` interface.

At start the driver reads the 832-word EEPROM (0x2400) and unpacks the calibration: supply and PTAT constants,
gain, per-pixel offset, sensitivity (alpha), Kta and Kv from their row/column/remainder encoding, the
compensation pixel, the temperature ranges (ksTo, ct) and the interleaved/chess corrections. It sets the
refresh rate and the chess read pattern in the control register (0x800D). Each measurement fills one subpage
(half of the pixels in a chess pattern); the driver waits for "new data" in the status register (0x8000),
reads the RAM (0x0400, 832 words), clears the flag, and turns that subpage's raw values into object
temperatures: Vdd, the sensor's own temperature Ta, gain and offset drift correction, the compensation
pixel's gradient correction, emissivity, and the Stefan–Boltzmann inversion with the sensor's ksTo ranges.
A frame is returned once both subpages are fresh. Broken and outlier pixels (marked in the EEPROM) are filled
from their neighbours.

``ambient_c`` is the air temperature estimated from the sensor's Ta (a sensor in open air runs about 8 °C
above it, the datasheet's "Ta shift"); it also sets the reflected temperature.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.drivers.io import DriverError
from edge.thermal.config import MLX90640Config
from edge.thermal.frame import ThermalFrame

ROWS, COLS = 24, 32
EEPROM, RAM, STATUS, CONTROL = 0x2400, 0x0400, 0x8000, 0x800D
REFRESH_HZ = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # control register bits 7–9
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class I2CBus(Protocol):
    """16-bit registers, big-endian 16-bit words (the MLX90640's I²C protocol)."""

    def read_words(self, address: int, register: int, count: int) -> list[int]: ...

    def write_word(self, address: int, register: int, value: int) -> None: ...


class _Msg(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("len", ctypes.c_uint16),
        ("buf", ctypes.c_void_p),
    ]


class _RdWr(ctypes.Structure):
    _fields_ = [("msgs", ctypes.POINTER(_Msg)), ("nmsgs", ctypes.c_uint32)]


class LinuxI2C:
    """``/dev/i2c-N`` through the kernel's combined transfer (I2C_RDWR): register address, repeated start, read."""

    I2C_RDWR, I2C_M_RD = 0x0707, 0x0001

    def __init__(self, bus: int) -> None:
        path = f"/dev/i2c-{bus}"
        try:
            self.fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise DriverError(
                f"{path} does not exist: enable I2C (raspi-config → Interface Options → I2C, or dtparam=i2c_arm=on)"
            ) from None
        except PermissionError:
            raise DriverError(f"{path} is not accessible: add the service user to the 'i2c' group") from None
        self.lock = threading.Lock()

    def _transfer(self, msgs: list[_Msg]) -> None:
        arr = (_Msg * len(msgs))(*msgs)
        try:
            fcntl.ioctl(self.fd, self.I2C_RDWR, _RdWr(arr, len(msgs)))
        except OSError as exc:
            raise DriverError(
                f"I2C transfer to 0x{msgs[0].addr:02x} failed: {exc} (wiring, address or pull-ups)"
            ) from None

    def read_words(self, address: int, register: int, count: int) -> list[int]:
        reg = ctypes.create_string_buffer(register.to_bytes(2, "big"), 2)
        out = ctypes.create_string_buffer(2 * count)
        with self.lock:
            self._transfer(
                [
                    _Msg(address, 0, 2, ctypes.cast(reg, ctypes.c_void_p)),
                    _Msg(address, self.I2C_M_RD, 2 * count, ctypes.cast(out, ctypes.c_void_p)),
                ]
            )
        return list(np.frombuffer(out.raw, dtype=">u2").astype(int))

    def write_word(self, address: int, register: int, value: int) -> None:
        data = ctypes.create_string_buffer(register.to_bytes(2, "big") + value.to_bytes(2, "big"), 4)
        with self.lock:
            self._transfer([_Msg(address, 0, 4, ctypes.cast(data, ctypes.c_void_p))])

    def close(self) -> None:
        os.close(self.fd)


def _signed(v: I64 | int, bits: int) -> I64:
    v = np.asarray(v, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v)


def _nibbles(words: I64, n: int) -> I64:
    """Signed 4-bit values packed four to a word, lowest nibble first."""
    return _signed(np.stack([(words >> s) & 0xF for s in (0, 4, 8, 12)], axis=1).reshape(-1)[:n], 4)


@dataclass(frozen=True)
class Calibration:
    """The EEPROM's calibration, unpacked (names as in the datasheet)."""

    k_vdd: float
    vdd25: float
    kv_ptat: float
    kt_ptat: float
    v_ptat25: float
    alpha_ptat: float
    gain_ee: float
    tgc: float
    ks_ta: float
    resolution_ee: int
    ks_to: tuple[float, float, float, float]
    ct: tuple[float, float, float, float]
    cp_offset: tuple[float, float]
    cp_kta: float
    cp_kv: float
    alpha: F64  # per pixel, compensated for the gradient (TGC × compensation pixel's alpha)
    offset: F64
    kta: F64
    kv: F64
    il_chess: tuple[float, float, float]
    calibration_mode: int  # 0 interleaved, 0x80 chess: the pattern the device was calibrated in
    bad: npt.NDArray[np.bool_]  # broken or outlier pixels

    @classmethod
    def from_eeprom(cls, words: list[int] | I64) -> Calibration:
        ee = np.asarray(words, dtype=np.int64)
        if ee.shape != (832,):
            raise DriverError(f"MLX90640 EEPROM: expected 832 words, got {ee.shape}")

        def s(i: int, shift: int, bits: int) -> int:
            return int(_signed(ee[i] >> shift, bits))

        k_vdd = s(51, 8, 8) * 32
        vdd25 = ((int(ee[51]) & 0xFF) - 256) * 32 - 8192
        ktascale1 = ((int(ee[56]) >> 4) & 0xF) + 8
        ktascale2 = int(ee[56]) & 0xF
        kvscale = (int(ee[56]) >> 8) & 0xF
        tgc = s(60, 0, 8) / 32
        # temperature ranges
        step = ((int(ee[63]) >> 12) & 3) * 10
        ct2 = ((int(ee[63]) >> 4) & 0xF) * step
        ct3 = ct2 + ((int(ee[63]) >> 8) & 0xF) * step
        ks_to_scale = float(1 << ((int(ee[63]) & 0xF) + 8))
        ks_to = tuple(float(s(61 + i // 2, 8 * (i % 2), 8)) / ks_to_scale for i in range(4))
        # compensation pixel
        alpha_scale_cp = ((int(ee[32]) >> 12) & 0xF) + 27
        cp_off0 = s(58, 0, 10)
        cp_off1 = cp_off0 + s(58, 10, 6)
        cp_alpha0 = s(57, 0, 10) / 2.0**alpha_scale_cp
        cp_alpha1 = (1 + s(57, 10, 6) / 128) * cp_alpha0
        # per pixel: row/column/remainder encoding
        pix = ee[64:]
        row = np.repeat(np.arange(ROWS), COLS)
        col = np.tile(np.arange(COLS), ROWS)
        acc_rem, acc_col, acc_row = int(ee[32]) & 0xF, (int(ee[32]) >> 4) & 0xF, (int(ee[32]) >> 8) & 0xF
        alpha_scale = ((int(ee[32]) >> 12) & 0xF) + 30
        acc_rows, acc_cols = _nibbles(ee[34:40], ROWS), _nibbles(ee[40:48], COLS)
        alpha = (
            _signed(pix >> 4, 6) * (1 << acc_rem)
            + int(ee[33])
            + (acc_rows[row] << acc_row)
            + (acc_cols[col] << acc_col)
        ) / 2.0**alpha_scale
        alpha = alpha - tgc * (cp_alpha0 + cp_alpha1) / 2
        occ_rem, occ_col, occ_row = int(ee[16]) & 0xF, (int(ee[16]) >> 4) & 0xF, (int(ee[16]) >> 8) & 0xF
        occ_rows, occ_cols = _nibbles(ee[18:24], ROWS), _nibbles(ee[24:32], COLS)
        offset = (
            _signed(pix >> 10, 6) * (1 << occ_rem)
            + int(_signed(ee[17], 16))
            + (occ_rows[row] << occ_row)
            + (occ_cols[col] << occ_col)
        ).astype(np.float64)
        split = 2 * (row % 2) + col % 2  # row even/odd × column even/odd
        kta_rc = np.array([s(54, 8, 8), s(55, 8, 8), s(54, 0, 8), s(55, 0, 8)])
        kta = (_signed(pix >> 1, 3) * (1 << ktascale2) + kta_rc[split]) / 2.0**ktascale1
        kv_t = np.array([s(52, 12, 4), s(52, 4, 4), s(52, 8, 4), s(52, 0, 4)])
        kv = kv_t[split] / 2.0**kvscale
        bad = (pix == 0) | ((pix & 1) == 1)
        if k_vdd == 0 or s(50, 0, 10) == 0 or s(48, 0, 16) == 0 or int(ee[49]) == 0:
            raise DriverError(
                "MLX90640 EEPROM: implausible calibration (a zero supply, PTAT or gain constant): the read was "
                "corrupted — check the wiring, the pull-ups and the I²C bus speed"
            )
        if int(bad.sum()) > 4:
            raise DriverError(f"MLX90640: {int(bad.sum())} faulty pixels in the EEPROM (at most 4 are allowed)")
        return cls(
            k_vdd=float(k_vdd),
            vdd25=float(vdd25),
            kv_ptat=s(50, 10, 6) / 4096,
            kt_ptat=s(50, 0, 10) / 8,
            v_ptat25=float(ee[49]),
            alpha_ptat=(int(ee[16]) & 0xF000) / 2.0**14 + 8,
            gain_ee=float(s(48, 0, 16)),
            tgc=tgc,
            ks_ta=s(60, 8, 8) / 8192,
            resolution_ee=(int(ee[56]) >> 12) & 3,
            ks_to=ks_to,  # type: ignore[arg-type]
            ct=(-40.0, 0.0, float(ct2), float(ct3)),
            cp_offset=(float(cp_off0), float(cp_off1)),
            cp_kta=s(59, 0, 8) / 2.0**ktascale1,
            cp_kv=s(59, 8, 8) / 2.0**kvscale,
            alpha=alpha.astype(np.float64),
            offset=offset,
            kta=kta.astype(np.float64),
            kv=kv.astype(np.float64),
            il_chess=(s(53, 0, 6) / 16, s(53, 6, 5) / 2, s(53, 11, 5) / 8),
            calibration_mode=(((int(ee[10]) & 0x0800) >> 4) ^ 0x80),
            bad=bad,
        )

    # --- one subpage ---------------------------------------------------------------------------------

    def vdd(self, ram: I64, control: int) -> float:
        resolution_ram = (control >> 10) & 3
        correction = 2.0**self.resolution_ee / 2.0**resolution_ram
        return float((correction * int(_signed(ram[810], 16)) - self.vdd25) / self.k_vdd + 3.3)

    def ta(self, ram: I64, vdd: float) -> float:
        ptat, vbe = int(_signed(ram[800], 16)), int(_signed(ram[768], 16))
        ptat_art = ptat / (ptat * self.alpha_ptat + vbe) * 2.0**18
        return float((ptat_art / (1 + self.kv_ptat * (vdd - 3.3)) - self.v_ptat25) / self.kt_ptat + 25)

    def temperatures(
        self, ram: list[int] | I64, control: int, subpage: int, emissivity: float, ta_shift: float = 8.0
    ) -> tuple[F64, npt.NDArray[np.bool_], float]:
        """Object temperatures (°C) of the pixels this subpage measured (a mask says which), and Ta."""
        r = np.asarray(ram, dtype=np.int64)
        gain_word, ptat, vbe = int(_signed(r[778], 16)), int(_signed(r[800], 16)), int(_signed(r[768], 16))
        if gain_word == 0 or ptat * self.alpha_ptat + vbe == 0:
            raise DriverError("MLX90640: implausible RAM words (gain or PTAT zero): I²C noise — check the wiring")
        vdd = self.vdd(r, control)
        ta = self.ta(r, vdd)
        tr = ta - ta_shift  # the surroundings reflected in the object
        ta4, tr4 = (ta + 273.15) ** 4, (tr + 273.15) ** 4
        ta_tr = tr4 - (tr4 - ta4) / emissivity
        gain = self.gain_ee / int(_signed(r[778], 16))
        chess = (control & 0x1000) >> 5
        dt, dv = ta - 25, vdd - 3.3
        cp = np.array([int(_signed(r[776], 16)), int(_signed(r[808], 16))], dtype=np.float64) * gain
        cp_off1 = self.cp_offset[1] + (self.il_chess[0] if chess != self.calibration_mode else 0.0)
        cp -= np.array([self.cp_offset[0], cp_off1]) * (1 + self.cp_kta * dt) * (1 + self.cp_kv * dv)
        p = np.arange(ROWS * COLS)
        il = (p // 32) % 2
        pattern = (il ^ (p % 2)) if chess else il
        mask = pattern == subpage
        ir = _signed(r[:768], 16) * gain - self.offset * (1 + self.kta * dt) * (1 + self.kv * dv)
        if chess != self.calibration_mode:
            conversion = ((p + 2) // 4 - (p + 3) // 4 + (p + 1) // 4 - p // 4) * (1 - 2 * il)
            ir = ir + self.il_chess[2] * (2 * il - 1) - self.il_chess[1] * conversion
        ir = (ir - self.tgc * cp[subpage]) / emissivity
        a = self.alpha * (1 + self.ks_ta * dt)
        k1 = self.ks_to[1]
        sx = k1 * np.power(np.clip(a**3 * (ir + a * ta_tr), 0, None), 0.25)
        to = np.power(np.clip(ir / (a * (1 - k1 * 273.15) + sx) + ta_tr, 0, None), 0.25) - 273.15
        ct = np.array(self.ct)
        ks = np.array(self.ks_to)
        corr = np.array(
            [1 / (1 + ks[0] * 40), 1.0, 1 + ks[1] * ct[2], (1 + ks[1] * ct[2]) * (1 + ks[2] * (ct[3] - ct[2]))]
        )
        rng = np.clip(np.searchsorted(ct[1:], to, side="right"), 0, 3)
        to = np.power(np.clip(ir / (a * corr[rng] * (1 + ks[rng] * (to - ct[rng]))) + ta_tr, 0, None), 0.25) - 273.15
        return to, mask & ~self.bad, ta


class MLX90640:
    """The sensor on an I²C bus; ``read`` blocks until a frame with both subpages fresh is ready."""

    def __init__(self, cfg: MLX90640Config, bus: I2CBus | None = None) -> None:
        self.cfg = cfg
        self.bus: I2CBus = bus if bus is not None else LinuxI2C(cfg.bus)
        self.address = cfg.address
        try:
            self.calibration = Calibration.from_eeprom(self.bus.read_words(self.address, EEPROM, 832))
            control = self.bus.read_words(self.address, CONTROL, 1)[0]
            rate = REFRESH_HZ.index(cfg.refresh_hz)
            # refresh rate; chess pattern; subpages alternating (bit 0 on, "repeat subpage" bit 3 off)
            control = ((control & ~(0x7 << 7) & ~0x0008) | (rate << 7) | 0x1000 | 0x0001) & 0xFFFF
            self.bus.write_word(self.address, CONTROL, control)
        except DriverError:
            raise
        except OSError as exc:
            raise DriverError(f"MLX90640 at 0x{self.address:02x} does not answer: {exc}") from None
        self.control = control
        self._temps = np.full(ROWS * COLS, np.nan)
        self._fresh = [False, False]
        self.ta: float | None = None
        self.ambient_c: float | None = None
        self.frames = 0

    def _subpage(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        poll = min(0.25 / self.cfg.refresh_hz, 0.05)
        while True:
            status = self.bus.read_words(self.address, STATUS, 1)[0]
            if status & 0x0008:
                break
            if time.monotonic() > deadline:
                raise DriverError(f"MLX90640 at 0x{self.address:02x}: no new data for {timeout_s:g} s")
            time.sleep(poll)
        ram = self.bus.read_words(self.address, RAM, 832)
        self.bus.write_word(self.address, STATUS, 0x0030)  # clear "new data", keep measuring
        subpage = status & 0x0001
        temps, mask, ta = self.calibration.temperatures(
            ram, self.control, subpage, self.cfg.emissivity, self.cfg.ta_shift_c
        )
        self._temps[mask] = temps[mask]
        self._fresh[subpage] = True
        self.ta = ta
        self.ambient_c = round(ta - self.cfg.ta_shift_c, 2)
        return subpage

    def read(self) -> ThermalFrame:
        self._fresh = [False, False]
        timeout = 4.0 / self.cfg.refresh_hz + 1.0
        deadline = time.monotonic() + 2 * timeout
        while not all(self._fresh):
            if time.monotonic() > deadline:  # new data keeps coming but one subpage never does
                raise DriverError(f"MLX90640 at 0x{self.address:02x}: one subpage never arrives (control register?)")
            self._subpage(timeout)
        t = self._temps.reshape(ROWS, COLS).copy()
        broken = ~np.isfinite(t)
        if broken.mean() > 0.1:
            raise DriverError("MLX90640: most pixels read as nonsense: I²C noise — check the wiring and bus speed")
        bad = self.calibration.bad.reshape(ROWS, COLS) | broken
        if bad.any():  # a faulty pixel: the mean of its good neighbours in the row
            for r, c in zip(*np.nonzero(bad), strict=True):
                near = [t[r, cc] for cc in (c - 1, c + 1) if 0 <= cc < COLS and not bad[r, cc]]
                t[r, c] = float(np.mean(near)) if near else float(np.mean(t[~bad]))
        if self.cfg.flip:
            t = t[:, ::-1]
        self.frames += 1
        return ThermalFrame(t.astype(np.float32), time.monotonic())

    def close(self) -> None:
        close = getattr(self.bus, "close", None)
        if callable(close):
            close()


def open_mlx90640(cfg: MLX90640Config) -> MLX90640:
    return MLX90640(cfg)
