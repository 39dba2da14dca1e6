"""A small MQTT 3.1.1 client for the boards: CONNECT (clean or persistent session, last will, keepalive),
PUBLISH at QoS 0 and 1 (a QoS 1 message is resent with DUP until its PUBACK arrives), SUBSCRIBE, PINGREQ, and
incoming PUBLISH (QoS 0/1, acknowledged) handed to a callback. Non-blocking: the owner calls ``poll()``
regularly; ``pending()`` tells how many QoS 1 messages are still unacknowledged.

With ``ca`` (the project CA, PEM), the connection is TLS to the broker's TLS listener and the broker's certificate
must chain to that CA and name ``server_hostname`` (default: the host): the board's password never crosses the
network in clear, and a broker impostor is refused before anything is sent.
"""

import binascii
import socket
import select

import hal

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14


class MQTTError(Exception):
    pass


def _varlen(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes((len(b) >> 8, len(b) & 0xFF)) + b


def _der(ca):
    """The first certificate of a PEM text as DER (the boards' mbedTLS builds parse DER only)."""
    if isinstance(ca, bytes):
        ca = ca.decode()
    if "-----BEGIN" not in ca:
        raise MQTTError("mqtt_ca is not a PEM certificate")
    body = ca.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
    return binascii.a2b_base64("".join(body.split()))


def _tls_wrap(sock, ca, hostname):
    """The socket wrapped in TLS, the peer verified against ``ca`` (PEM) and ``hostname``."""
    ca = _der(ca)
    try:
        import tls
    except ImportError:  # MicroPython before 1.23
        import ssl

        return ssl.wrap_socket(sock, cert_reqs=ssl.CERT_REQUIRED, cadata=ca, server_hostname=hostname)
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    return ctx.wrap_socket(sock, server_hostname=hostname)


class MQTTClient:
    def __init__(
        self, client_id, host, port=1883, user=None, password=None, keepalive=30, clean=True, ca=None,
        server_hostname=None,
    ):
        self.client_id, self.host, self.port = client_id, host, port
        self.ca, self.server_hostname = ca, server_hostname
        self.user, self.password = user, password
        self.keepalive, self.clean = keepalive, clean
        self.will = None
        self.sock = None
        self.on_message = None
        self._buf = b""
        self._pid = 0
        self._inflight = {}  # packet id → (topic, payload, retain, last sent ms)
        self._last_tx = 0
        self._ping_out = False
        self.retry_ms = 2000

    def set_last_will(self, topic, payload, retain=False, qos=1):
        """``payload``: bytes/str, or a function called at every CONNECT (a will with a fresh message id each
        time: the cloud keeps each message once, by its id)."""
        self.will = (topic, payload, retain, qos)

    # --- connection -----------------------------------------------------------------------------------

    def connect(self, timeout_ms=5000):
        addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        s = socket.socket()
        s.connect(addr)
        if self.ca is not None:
            try:
                s = _tls_wrap(s, self.ca, self.server_hostname or self.host)
            except OSError:
                s.close()
                raise
        self.sock = s
        flags = 0x02 if self.clean else 0
        payload = _str(self.client_id)
        if self.will:
            t, m, r, q = self.will
            if callable(m):
                m = m()
            flags |= 0x04 | (q << 3) | (0x20 if r else 0)
            payload += _str(t) + _str(m)
        if self.user:
            flags |= 0x80
            payload += _str(self.user)
            if self.password:
                flags |= 0x40
                payload += _str(self.password)
        var = _str("MQTT") + bytes((4, flags, self.keepalive >> 8, self.keepalive & 0xFF))
        self._send(CONNECT << 4, var + payload)
        s.setblocking(False)
        self._poll = select.poll()
        self._poll.register(s, select.POLLIN)
        deadline = hal.ticks_add(hal.ticks_ms(), timeout_ms)
        while hal.ticks_diff(deadline, hal.ticks_ms()) > 0:
            pkt = self._read_packet(50)
            if pkt is None:
                continue
            kind, body = pkt
            if kind != CONNACK:
                raise MQTTError("expected CONNACK")
            if body[1] != 0:
                raise MQTTError("connection refused, code " + str(body[1]))
            for pid in list(self._inflight):  # a persistent session: resend what was not acknowledged
                self._resend(pid)
            return bool(body[0] & 1)
        raise MQTTError("no CONNACK")

    def disconnect(self):
        if self.sock:
            try:
                self._send(DISCONNECT << 4, b"")
            except OSError:
                pass
            self.close()

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._buf = b""

    @property
    def connected(self):
        return self.sock is not None

    # --- sending ----------------------------------------------------------------------------------------

    def _send(self, header, body):
        data = bytes((header,)) + _varlen(len(body)) + body
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            try:
                n = self.sock.write(view[sent:])
            except OSError as exc:
                if exc.args and exc.args[0] == 11:  # EAGAIN: the socket buffer is full
                    hal.sleep_ms(2)
                    continue
                self.close()
                raise
            if n is None:
                hal.sleep_ms(2)
                continue
            sent += n
        self._last_tx = hal.ticks_ms()

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def publish(self, topic, payload, qos=0, retain=False):
        """Send; for QoS 1 return the packet id (``pending()`` drops to zero when acknowledged)."""
        if qos not in (0, 1):
            raise MQTTError("QoS 0 or 1")
        if isinstance(payload, str):
            payload = payload.encode()
        header = (PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
        if qos == 0:
            self._send(header, _str(topic) + payload)
            return 0
        pid = self._next_pid()
        self._inflight[pid] = (topic, payload, retain, hal.ticks_ms())
        self._send(header, _str(topic) + bytes((pid >> 8, pid & 0xFF)) + payload)
        return pid

    def _resend(self, pid):
        topic, payload, retain, _ = self._inflight[pid]
        header = (PUBLISH << 4) | 0x08 | 0x02 | (1 if retain else 0)  # DUP, QoS 1
        self._inflight[pid] = (topic, payload, retain, hal.ticks_ms())
        self._send(header, _str(topic) + bytes((pid >> 8, pid & 0xFF)) + payload)

    def subscribe(self, topic, qos=1):
        pid = self._next_pid()
        self._send((SUBSCRIBE << 4) | 0x02, bytes((pid >> 8, pid & 0xFF)) + _str(topic) + bytes((qos,)))
        deadline = hal.ticks_add(hal.ticks_ms(), 5000)
        while hal.ticks_diff(deadline, hal.ticks_ms()) > 0:
            if self.poll(50) == SUBACK:
                return
        raise MQTTError("no SUBACK")

    def pending(self):
        return len(self._inflight)

    # --- receiving --------------------------------------------------------------------------------------

    def _read_packet(self, wait_ms):
        if not self._fill(wait_ms):
            return None
        buf = self._buf
        if len(buf) < 2:
            return None
        mult, length, i = 1, 0, 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(buf) < i + length:
            return None
        kind, flags, body = buf[0] >> 4, buf[0] & 0x0F, buf[i : i + length]
        self._buf = buf[i + length :]
        return (kind, body) if kind != PUBLISH else (kind, (flags, body))

    def _fill(self, wait_ms):
        if self.sock is None:
            raise MQTTError("not connected")
        if self._buf and self._complete():
            return True
        if not self._poll.poll(wait_ms):
            return bool(self._buf)
        try:
            data = self.sock.read(1024)
        except OSError as exc:
            if exc.args and exc.args[0] == 11:
                return bool(self._buf)
            self.close()
            raise
        if data is None:  # TLS: a record not complete yet
            return bool(self._buf)
        if not data:
            self.close()
            raise MQTTError("connection closed by the broker")
        self._buf += data
        return True

    def _complete(self):
        buf = self._buf
        mult, length, i = 1, 0, 1
        while i < len(buf):
            b = buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                return len(buf) >= i + length
        return False

    def poll(self, wait_ms=0):
        """Handle what has arrived, resend overdue QoS 1 messages, keep the connection alive; return the type of
        the last packet handled (or None)."""
        last = None
        while True:
            pkt = self._read_packet(wait_ms)
            wait_ms = 0
            if pkt is None:
                break
            kind, body = pkt
            last = kind
            if kind == PUBACK:
                self._inflight.pop((body[0] << 8) | body[1], None)
            elif kind == PINGRESP:
                self._ping_out = False
            elif kind == PUBLISH:
                flags, data = body
                tlen = (data[0] << 8) | data[1]
                topic = bytes(data[2 : 2 + tlen]).decode()
                pos = 2 + tlen
                if (flags >> 1) & 3:
                    pid = (data[pos] << 8) | data[pos + 1]
                    pos += 2
                    self._send(PUBACK << 4, bytes((pid >> 8, pid & 0xFF)))
                if self.on_message:
                    self.on_message(topic, bytes(data[pos:]))
        now = hal.ticks_ms()
        for pid in list(self._inflight):
            if hal.ticks_diff(now, self._inflight[pid][3]) > self.retry_ms:
                self._resend(pid)
        if self.keepalive and hal.ticks_diff(now, self._last_tx) > self.keepalive * 500 and not self._ping_out:
            self._send(PINGREQ << 4, b"")
            self._ping_out = True
        return last
