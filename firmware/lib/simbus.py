"""Simulated peripherals for the unix port, driven by the rig's sensors file (``{"sensors": {...}}``):
an I2C bus with a LIS3DH model (registers, auto-increment reads, INT1 latch), ADC channels in millivolts, and
a deep sleep that a motion interrupt cuts short — so the firmware's real drivers run unchanged."""

import hal


class SimI2C:
    def __init__(self, sensors):
        self.sensors = sensors
        self.regs = {0x0F: 0x33}
        self.writes = []

    def readfrom_mem(self, addr, reg, n):
        if addr != 0x18:
            raise OSError(19)  # ENODEV: nobody answers at that address
        base = reg & 0x7F
        if base == 0x28:
            s = self.sensors.read()
            out = bytearray()
            for axis in ("ax_mg", "ay_mg", "az_mg"):
                v = int(s.get(axis, 1000 if axis == "az_mg" else 0)) << 4
                v &= 0xFFFF
                out += bytes((v & 0xFF, v >> 8))
            return bytes(out[:n])
        if base == 0x31:  # INT1_SRC: active while the rig says the cover moves
            return bytes((0x40 if self.sensors.read().get("int1") else 0,))
        return bytes(self.regs.get(base + i, 0) for i in range(n))

    def writeto_mem(self, addr, reg, data):
        for i, b in enumerate(data):
            self.regs[(reg & 0x7F) + i] = b
        self.writes.append((reg, bytes(data)))


class SimADC:
    def __init__(self, sensors, key):
        self.sensors, self.key = sensors, key

    def read_uv(self):
        return int(float(self.sensors.read().get(self.key, 0)) * 1000)


def deep_sleep(sensors, ms, wake_on_int1=True):
    """Sleep ``ms``; return True if the motion interrupt woke the board early."""
    end = hal.ticks_add(hal.ticks_ms(), ms)
    while hal.ticks_diff(end, hal.ticks_ms()) > 0:
        if wake_on_int1 and sensors.read().get("int1"):
            return True
        hal.sleep_ms(10)
    return False
