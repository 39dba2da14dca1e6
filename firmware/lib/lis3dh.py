"""LIS3DH 3-axis accelerometer over I2C, register level: identity check, 100 Hz high-resolution ±2 g, a
motion interrupt on INT1 (wakes the board from deep sleep when the cover moves), and readings in g."""

WHO_AM_I, CTRL_REG1, CTRL_REG3, CTRL_REG4 = 0x0F, 0x20, 0x22, 0x23
INT1_CFG, INT1_SRC, INT1_THS, INT1_DURATION, OUT_X_L = 0x30, 0x31, 0x32, 0x33, 0x28
IDENTITY = 0x33


class LIS3DHError(Exception):
    pass


class LIS3DH:
    def __init__(self, i2c, addr=0x18):
        self.i2c, self.addr = i2c, addr
        who = self.i2c.readfrom_mem(addr, WHO_AM_I, 1)[0]
        if who != IDENTITY:
            raise LIS3DHError("no LIS3DH at 0x%02x (WHO_AM_I 0x%02x)" % (addr, who))
        self._w(CTRL_REG1, 0x57)  # 100 Hz, normal mode, X/Y/Z on
        self._w(CTRL_REG4, 0x88)  # block data update, ±2 g, high resolution (12 bit)

    def _w(self, reg, value):
        self.i2c.writeto_mem(self.addr, reg, bytes((value,)))

    def motion_interrupt(self, threshold_mg=96, duration_samples=2):
        """INT1 goes high when any axis exceeds the threshold (16 mg steps at ±2 g) for the duration."""
        self._w(CTRL_REG3, 0x40)  # IA1 interrupt on INT1
        self._w(INT1_THS, max(1, min(127, threshold_mg // 16)))
        self._w(INT1_DURATION, duration_samples)
        self._w(INT1_CFG, 0x2A)  # OR of X/Y/Z high events

    def interrupt_source(self):
        return self.i2c.readfrom_mem(self.addr, INT1_SRC, 1)[0]  # reading it also clears the latch

    def read_g(self):
        raw = self.i2c.readfrom_mem(self.addr, OUT_X_L | 0x80, 6)  # auto-increment
        out = []
        for i in (0, 2, 4):
            v = raw[i] | (raw[i + 1] << 8)
            if v & 0x8000:
                v -= 0x10000
            out.append((v >> 4) / 1000.0)  # 12-bit left-justified, 1 mg per digit at ±2 g high resolution
        return out
