"""A register-level MLX90640: an EEPROM holding a calibration, RAM filled one subpage at a time, the status and
control registers, on the same ``I2CBus`` interface the driver uses for ``/dev/i2c-N``.

The device is made from a seed: plausible calibration values (supply, PTAT, gain, per-pixel offsets spread by
row, column and a remainder, sensitivities, Kta, Kv, the compensation pixel, the temperature ranges) packed
into the EEPROM's bit fields as the datasheet lays them out, with a broken pixel marked. A ``scene`` —
object temperatures (24×32, °C), the sensor's own temperature Ta, the surroundings' temperature reflected
and the emissivity — is encoded into raw ADC words by running the datasheet's relations backwards from the
physics: radiation above the reflected background, divided by the pixel's sensitivity, plus its offset and
drifts, through the gain. Measurements complete at the refresh rate set in the control register, alternating
subpages in the chess pattern; the status register says which subpage is new until the host clears the flag.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

ROWS, COLS = 24, 32
EEPROM, RAM, STATUS, CONTROL = 0x2400, 0x0400, 0x8000, 0x800D
REFRESH_HZ = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
F64 = npt.NDArray[np.float64]


def _u(v: int, bits: int) -> int:
    """A signed value as its two's complement bit field."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not lo <= v <= hi:
        raise ValueError(f"{v} does not fit a signed {bits}-bit field")
    return v & ((1 << bits) - 1)


def _pack_nibbles(values: list[int]) -> list[int]:
    out = []
    for i in range(0, len(values), 4):
        out.append(sum(_u(v, 4) << (4 * k) for k, v in enumerate(values[i : i + 4])))
    return out


@dataclass
class Scene:
    """What the array looks at: object temperatures (°C, 24×32), the sensor's temperature, the surroundings."""

    to_c: F64
    ta_c: float = 35.0
    reflected_c: float | None = None  # None: Ta − 8 °C (a sensor in open air), as hosts assume by default
    emissivity: float = 1.0


@dataclass
class MLX90640Sim:
    seed: int = 0
    address: int = 0x33
    broken_pixel: int | None = 101
    clock: Callable[[], float] = time.monotonic
    scene: Scene = field(default_factory=lambda: Scene(np.full((ROWS, COLS), 22.0)))

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.lock = threading.Lock()
        # --- the calibration the device "was trimmed with" (physical values, then their fields) ---------
        self.k_vdd_raw, self.vdd25_raw = -100, 120  # kVdd = −3200 LSB/V, Vdd25 = −12544
        self.kv_ptat_raw, self.kt_ptat_raw, self.v_ptat25, self.alpha_ptat_raw = 22, 338, 12200, 4
        self.gain_ee = 6000
        self.tgc_raw, self.ks_ta_raw = 2, -16  # TGC 1/16; KsTa −0.002/K
        self.resolution = 2
        self.kta_scale1, self.kta_scale2, self.kv_scale = 6, 3, 4  # fields: Kta scales 2^(6+8), 2^3; Kv 2^4
        self.ct_step, self.ct2, self.ct3, self.ks_to_scale = 2, 8, 10, 9  # ct2 = 160 °C, ct3 = 360 °C (×20)
        self.ks_to_raw = (-24, -30, -20, -14)
        self.cp_offset_raw, self.cp_offset_delta = -60, 4
        self.cp_alpha_raw, self.cp_alpha_ratio = 300, 10
        self.cp_kta_raw, self.cp_kv_raw = 40, 5
        self.alpha_ref, self.alpha_scale_field = 4300, 4  # alpha ≈ 4300 / 2^34 ≈ 2.5e-7
        self.acc_rem, self.acc_col_scale, self.acc_row_scale = 2, 4, 4
        self.acc_rows = [int(v) for v in rng.integers(-6, 7, ROWS)]
        self.acc_cols = [int(v) for v in rng.integers(-6, 7, COLS)]
        self.offset_ref = -60
        self.occ_rem, self.occ_col_scale, self.occ_row_scale = 1, 2, 2
        self.occ_rows = [int(v) for v in rng.integers(-7, 8, ROWS)]
        self.occ_cols = [int(v) for v in rng.integers(-7, 8, COLS)]
        self.kta_rc = [int(v) for v in rng.integers(60, 90, 4)]  # RoCo, RoCe, ReCo, ReCe
        self.kv_t = [int(v) for v in rng.integers(2, 7, 4)]
        self.il_chess = (5, -3, 4)
        self.pix_offset = rng.integers(-20, 20, ROWS * COLS)
        self.pix_alpha = rng.integers(-25, 26, ROWS * COLS)
        self.pix_kta = rng.integers(-3, 4, ROWS * COLS)
        self.eeprom = self._eeprom()
        # --- registers ----------------------------------------------------------------------------------
        self.ram = np.zeros(832, dtype=np.int64)
        self.control = 0x1901  # chess, 18-bit ADC, 2 Hz (the factory default)
        self.status = 0x0000
        self.next_subpage = 0
        self.started = self.clock()
        self.measured = 0  # measurements completed so far
        self.reads: dict[int, int] = {}  # register → times read (tests)

    # --- EEPROM ------------------------------------------------------------------------------------------

    def _eeprom(self) -> list[int]:
        ee = [0] * 832
        ee[10] = 0x0000  # bit 11 clear: calibrated in the chess pattern
        ee[16] = (self.alpha_ptat_raw << 12) | (self.occ_row_scale << 8) | (self.occ_col_scale << 4) | self.occ_rem
        ee[17] = _u(self.offset_ref, 16)
        ee[18:24] = _pack_nibbles(self.occ_rows)
        ee[24:32] = _pack_nibbles(self.occ_cols)
        ee[32] = (self.alpha_scale_field << 12) | (self.acc_row_scale << 8) | (self.acc_col_scale << 4) | self.acc_rem
        ee[33] = self.alpha_ref
        ee[34:40] = _pack_nibbles(self.acc_rows)
        ee[40:48] = _pack_nibbles(self.acc_cols)
        ee[48] = _u(self.gain_ee, 16)
        ee[49] = self.v_ptat25
        ee[50] = (_u(self.kv_ptat_raw, 6) << 10) | _u(self.kt_ptat_raw, 10)
        ee[51] = (_u(self.k_vdd_raw, 8) << 8) | self.vdd25_raw
        ee[52] = (
            (_u(self.kv_t[0], 4) << 12) | (_u(self.kv_t[2], 4) << 8) | (_u(self.kv_t[1], 4) << 4) | _u(self.kv_t[3], 4)
        )
        c0, c1, c2 = self.il_chess
        ee[53] = (_u(c2, 5) << 11) | (_u(c1, 5) << 6) | _u(c0, 6)
        ee[54] = (_u(self.kta_rc[0], 8) << 8) | _u(self.kta_rc[2], 8)
        ee[55] = (_u(self.kta_rc[1], 8) << 8) | _u(self.kta_rc[3], 8)
        ee[56] = (self.resolution << 12) | (self.kv_scale << 8) | (self.kta_scale1 << 4) | self.kta_scale2
        ee[57] = (_u(self.cp_alpha_ratio, 6) << 10) | _u(self.cp_alpha_raw, 10)
        ee[58] = (_u(self.cp_offset_delta, 6) << 10) | _u(self.cp_offset_raw, 10)
        ee[59] = (_u(self.cp_kv_raw, 8) << 8) | _u(self.cp_kta_raw, 8)
        ee[60] = (_u(self.ks_ta_raw, 8) << 8) | _u(self.tgc_raw, 8)
        ee[61] = (_u(self.ks_to_raw[1], 8) << 8) | _u(self.ks_to_raw[0], 8)
        ee[62] = (_u(self.ks_to_raw[3], 8) << 8) | _u(self.ks_to_raw[2], 8)
        ee[63] = (self.ct_step << 12) | (self.ct3 << 8) | (self.ct2 << 4) | self.ks_to_scale
        for p in range(ROWS * COLS):
            word = (_u(int(self.pix_offset[p]), 6) << 10) | (_u(int(self.pix_alpha[p]), 6) << 4)
            word |= _u(int(self.pix_kta[p]), 3) << 1
            ee[64 + p] = word if word else 0x0400  # an all-zero word marks a broken pixel
        if self.broken_pixel is not None:
            ee[64 + self.broken_pixel] = 0
        return ee

    # --- physics → raw -----------------------------------------------------------------------------------

    def _physical(self) -> dict[str, object]:
        row = np.repeat(np.arange(ROWS), COLS)
        col = np.tile(np.arange(COLS), ROWS)
        tgc = self.tgc_raw / 32
        cp_alpha0 = self.cp_alpha_raw / 2.0 ** (self.alpha_scale_field + 27)
        cp_alpha1 = (1 + self.cp_alpha_ratio / 128) * cp_alpha0
        acc_rows, acc_cols = np.array(self.acc_rows), np.array(self.acc_cols)
        alpha = (
            self.pix_alpha * 2**self.acc_rem
            + self.alpha_ref
            + acc_rows[row] * 2**self.acc_row_scale
            + acc_cols[col] * 2**self.acc_col_scale
        ) / 2.0 ** (self.alpha_scale_field + 30)
        occ_rows, occ_cols = np.array(self.occ_rows), np.array(self.occ_cols)
        offset = (
            self.pix_offset * 2**self.occ_rem
            + self.offset_ref
            + occ_rows[row] * 2**self.occ_row_scale
            + occ_cols[col] * 2**self.occ_col_scale
        )
        split = 2 * (row % 2) + col % 2
        kta = (self.pix_kta * 2**self.kta_scale2 + np.array(self.kta_rc)[split]) / 2.0 ** (self.kta_scale1 + 8)
        kv = np.array(self.kv_t)[split] / 2.0**self.kv_scale
        return {
            "alpha": alpha - tgc * (cp_alpha0 + cp_alpha1) / 2,  # what the radiation sees, net of the gradient term
            "offset": offset.astype(np.float64),
            "kta": kta,
            "kv": kv,
            "tgc": tgc,
            "ks_ta": self.ks_ta_raw / 8192,
            "ks_to1": self.ks_to_raw[1] / 2.0 ** (self.ks_to_scale + 8),
            "cp_offset": (float(self.cp_offset_raw), float(self.cp_offset_raw + self.cp_offset_delta)),
            "cp_kta": self.cp_kta_raw / 2.0 ** (self.kta_scale1 + 8),
            "cp_kv": self.cp_kv_raw / 2.0**self.kv_scale,
        }

    def _encode(self, subpage: int) -> None:
        """Fill the RAM for one measured subpage from the scene (Vdd at exactly 3.3 V)."""
        s = self.scene
        ph = self._physical()
        ram = self.ram
        # Vdd: the supply word equals Vdd25 at 3.3 V (the ADC resolution matches the calibration's)
        ram[810] = _u(((self.vdd25_raw - 256) << 5) - 8192, 16)
        # Ta: choose PTAT, solve the VBE word that gives the scene's Ta
        kt_ptat, v_ptat25, alpha_ptat = self.kt_ptat_raw / 8, self.v_ptat25, self.alpha_ptat_raw / 4 + 8
        ptat_art = (s.ta_c - 25) * kt_ptat + v_ptat25
        ptat = 1700
        vbe = round(ptat * 2**18 / ptat_art - ptat * alpha_ptat)
        ram[800], ram[768] = ptat, _u(vbe, 16)
        ta = ((ptat / (ptat * alpha_ptat + vbe) * 2**18) - v_ptat25) / kt_ptat + 25  # what the host will see
        ram[778] = self.gain_ee  # the gain word at the calibration's gain: gain factor 1
        dt = ta - 25
        cp_raw = [-80, -70]  # the compensation pixels' raw words (a blind pixel: its own offset only)
        ram[776], ram[808] = _u(cp_raw[0], 16), _u(cp_raw[1], 16)
        cp = np.array(cp_raw, dtype=np.float64) - np.array(ph["cp_offset"]) * (1 + ph["cp_kta"] * dt)  # type: ignore[operator]
        # pixels of this subpage (chess pattern)
        p = np.arange(ROWS * COLS)
        mask = (((p // 32) % 2) ^ (p % 2)) == subpage
        reflected = s.reflected_c if s.reflected_c is not None else ta - 8.0
        ta4, tr4 = (ta + 273.15) ** 4, (reflected + 273.15) ** 4
        ta_tr = tr4 - (tr4 - ta4) / s.emissivity
        to = np.asarray(s.to_c, dtype=np.float64).reshape(-1)
        a = ph["alpha"] * (1 + ph["ks_ta"] * dt)  # type: ignore[operator]
        ks_to1 = ph["ks_to1"]
        # radiation: within the first range (0 °C … ct2) the sensitivity grows by ksTo1 per kelvin above 0 °C
        signal = ((to + 273.15) ** 4 - ta_tr) * a * (1 + ks_to1 * to)  # type: ignore[operator]
        ir = signal * s.emissivity + ph["tgc"] * cp[subpage]
        raw = ir + ph["offset"] * (1 + ph["kta"] * dt)  # type: ignore[operator]
        words = np.round(raw).astype(np.int64)
        if np.any(np.abs(words[mask]) > 32767):
            raise ValueError("the scene does not fit the ADC's range")
        ram[:768] = np.where(mask, words & 0xFFFF, ram[:768])
        self.status = (self.status & ~0x0007) | subpage | 0x0008

    # --- time ----------------------------------------------------------------------------------------------

    def _tick(self) -> None:
        rate = REFRESH_HZ[(self.control >> 7) & 0x7]
        due = int((self.clock() - self.started) * rate)
        if due > self.measured:
            self.measured = due
            self._encode(self.next_subpage)
            self.next_subpage ^= 1

    # --- the I2CBus interface ------------------------------------------------------------------------------

    def read_words(self, address: int, register: int, count: int) -> list[int]:
        if address != self.address:
            raise OSError(121, "Remote I/O error (no device at this address)")
        with self.lock:
            self._tick()
            self.reads[register] = self.reads.get(register, 0) + 1
            out = []
            for r in range(register, register + count):
                if EEPROM <= r < EEPROM + 832:
                    out.append(self.eeprom[r - EEPROM])
                elif RAM <= r < RAM + 832:
                    out.append(int(self.ram[r - RAM]) & 0xFFFF)
                elif r == STATUS:
                    out.append(self.status)
                elif r == CONTROL:
                    out.append(self.control)
                else:
                    out.append(0)
            return out

    def write_word(self, address: int, register: int, value: int) -> None:
        if address != self.address:
            raise OSError(121, "Remote I/O error (no device at this address)")
        with self.lock:
            if register == CONTROL:
                rate_changed = (value ^ self.control) & (0x7 << 7)
                self.control = value & 0xFFFF
                if rate_changed:
                    self.started, self.measured = self.clock(), 0
            elif register == STATUS:
                self.status = (self.status & ~0x0008) | (value & 0x0008)  # the host clears "new data"
            else:
                raise OSError(5, f"register 0x{register:04x} is read-only")


def face_scene(ambient_c: float = 22.0, face_c: float = 34.5, canthus_c: float = 35.6) -> F64:
    """A known scene: a warm face (an ellipse) with a hotter inner canthus on a background at ambient."""
    t = np.full((ROWS, COLS), ambient_c)
    r, c = np.mgrid[0:ROWS, 0:COLS]
    t[((c - 16) / 6.0) ** 2 + ((r - 12) / 8.0) ** 2 <= 1] = face_c
    t[10, 14] = t[10, 17] = canthus_c
    return np.asarray(t + 0.05 * np.sin(r * 0.7 + c * 0.3), dtype=np.float64)  # a little texture everywhere


__all__ = ["MLX90640Sim", "Scene", "face_scene"]
_ = math
