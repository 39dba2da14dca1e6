"""I/O board firmware: relays and digital inputs behind the serial frame protocol (``serial_frame``).

Requests: ping, info, read inputs, set outputs, pulse output (timed on the board), watchdog config and kick.
Unsolicited events: input changed (debounced), safe state entered, and a log line when the gateway's contact
returns after a safe state. **Watchdog safe state**: if the gateway is silent for the configured time, every
relay goes to its safe level from ``config.json`` (a lock relay: off = locked; a fire-door hold relay: on =
released) unless the gateway's watchdog config names other levels.

Run under the unix port: ``micropython main.py <uart path> <state dir>`` (inputs.json in, outputs.json out).
"""

import sys

import hal
import serial_frame as sf

DEFAULTS = {
    "name": "ioboard",
    "version": "1.0",
    "inputs": 8,
    "outputs": 8,
    "safe": [0, 0, 0, 0, 0, 0, 0, 0],  # relay levels in the safe state
    "debounce_ms": 30,
    "uart": {"id": 1, "baud": 115200, "tx": 17, "rx": 16},
    "in_pins": [32, 33, 25, 26, 27, 14, 12, 13],
    "out_pins": [23, 22, 21, 19, 18, 5, 4, 2],
}


class IOBoard:
    def __init__(self, cfg, uart, pins):
        self.cfg = cfg
        self.uart = uart
        self.pins = pins
        self.reader = sf.FrameReader()
        self.outputs = [0] * cfg["outputs"]
        self.pulse_end = [None] * cfg["outputs"]
        self.inputs = 0
        self.raw_inputs = 0
        self.raw_since = hal.ticks_ms()
        self.evt_seq = 0
        self.wd_ms = 0
        self.wd_safe = None
        self.last_contact = hal.ticks_ms()
        self.in_safe_state = False
        self.safe_since = 0
        self.log = hal.LogRing()
        self.inputs = self._bits(pins.read_inputs())
        self.raw_inputs = self.inputs

    @staticmethod
    def _bits(levels):
        b = 0
        for i, v in enumerate(levels):
            if v:
                b |= 1 << i
        return b

    def _send(self, kind, seq, op, payload=b""):
        self.uart.write(sf.encode_frame(kind, seq, op, payload))

    def _event(self, op, payload):
        self.evt_seq = (self.evt_seq + 1) & 0xFF
        self._send(sf.KIND_EVT, self.evt_seq, op, payload)

    def _out_bits(self):
        return self._bits(self.outputs)

    def _apply(self):
        self.pins.write_outputs(self.outputs)

    def _set(self, ch, level):
        self.outputs[ch] = 1 if level else 0
        self.pulse_end[ch] = None

    def handle(self, seq, op, payload):
        now = hal.ticks_ms()
        if self.in_safe_state:
            self.in_safe_state = False
            msg = "gateway back after " + str(hal.ticks_diff(now, self.safe_since)) + " ms in the safe state"
            self.log.add(msg)
            self._event(sf.OP_LOG, msg.encode())
        self.last_contact = now
        n_out = self.cfg["outputs"]
        try:
            if op == sf.OP_PING:
                self._send(sf.KIND_RSP, seq, op, payload)
            elif op == sf.OP_INFO:
                text = self.cfg["name"] + " " + self.cfg["version"] + " in=" + str(self.cfg["inputs"])
                self._send(sf.KIND_RSP, seq, op, (text + " out=" + str(n_out)).encode())
            elif op == sf.OP_READ_INPUTS:
                self._send(sf.KIND_RSP, seq, op, sf.u16(self.inputs) + sf.u16(self._out_bits()))
            elif op == sf.OP_SET_OUTPUTS:
                mask, values = sf.get_u16(payload), sf.get_u16(payload, 2)
                for ch in range(n_out):
                    if mask & (1 << ch):
                        self._set(ch, values & (1 << ch))
                self._apply()
                self._send(sf.KIND_RSP, seq, op, sf.u16(self._out_bits()))
            elif op == sf.OP_PULSE_OUTPUT:
                if len(payload) < 3 or payload[0] >= n_out:
                    raise ValueError("pulse")
                ch, ms = payload[0], sf.get_u16(payload, 1)
                self.outputs[ch] = 1
                self.pulse_end[ch] = hal.ticks_add(now, ms)
                self._apply()
                self._send(sf.KIND_RSP, seq, op, sf.u16(self._out_bits()))
            elif op == sf.OP_WATCHDOG_CONFIG:
                self.wd_ms = sf.get_u16(payload)
                given = sf.get_u16(payload, 2) if len(payload) >= 4 else 0
                self.wd_safe = given if given else None
                self._send(sf.KIND_RSP, seq, op)
            elif op == sf.OP_WATCHDOG_KICK:
                self._send(sf.KIND_RSP, seq, op)
            else:
                self._send(sf.KIND_NAK, seq, op, bytes([sf.NAK_BAD_OP]))
        except (ValueError, sf.FrameError):
            self._send(sf.KIND_NAK, seq, op, bytes([sf.NAK_BAD_ARGS]))

    def tick(self):
        now = hal.ticks_ms()
        changed = False
        for ch in range(len(self.outputs)):
            end = self.pulse_end[ch]
            if end is not None and hal.ticks_diff(now, end) >= 0:
                self.outputs[ch] = 0
                self.pulse_end[ch] = None
                changed = True
        if changed:
            self._apply()
        raw = self._bits(self.pins.read_inputs())
        if raw != self.raw_inputs:
            self.raw_inputs, self.raw_since = raw, now
        elif raw != self.inputs and hal.ticks_diff(now, self.raw_since) >= self.cfg["debounce_ms"]:
            diff = raw ^ self.inputs
            self.inputs = raw
            self._event(sf.OP_INPUT_CHANGED, sf.u16(self.inputs) + sf.u16(diff))
        if self.wd_ms and not self.in_safe_state and hal.ticks_diff(now, self.last_contact) > self.wd_ms:
            self.enter_safe_state(now)

    def enter_safe_state(self, now):
        safe = self.cfg["safe"]
        for ch in range(len(self.outputs)):
            level = (self.wd_safe >> ch) & 1 if self.wd_safe is not None else (safe[ch] if ch < len(safe) else 0)
            self._set(ch, level)
        self._apply()
        self.in_safe_state, self.safe_since = True, now
        self.log.add("gateway silent: safe state")
        self._event(sf.OP_SAFE_STATE, sf.u16(self._out_bits()))

    def run(self, wdt):
        while True:
            data = self.uart.read(5)
            if data:
                for kind, seq, op, payload in self.reader.feed(data):
                    if kind == sf.KIND_REQ:
                        self.handle(seq, op, payload)
            self.tick()
            wdt.feed()


def main(argv):
    if hal.UNIX:
        uart_path, state = argv[1], argv[2]
        cfg = hal.load_config(state + "/config.json", DEFAULTS)
        uart = hal.UnixUart(uart_path)
        pins = hal.UnixPins(cfg["inputs"], cfg["outputs"], state + "/inputs.json", state + "/outputs.json")
    else:
        cfg = hal.load_config("config.json", DEFAULTS)
        u = cfg["uart"]
        uart = hal.BoardUart(u["id"], u["baud"], u["tx"], u["rx"])
        pins = hal.BoardPins(cfg["in_pins"][: cfg["inputs"]], cfg["out_pins"][: cfg["outputs"]])
    board = IOBoard(cfg, uart, pins)
    board.run(hal.Watchdog(5000))


main(sys.argv)
