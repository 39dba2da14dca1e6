"""A simulated IP camera: an RTSP server (RTSP/1.0, RFC 2326) streaming JPEG frames over RTP (RFC 2435),
interleaved on the RTSP connection, as the gate cameras on a site's network do.

It answers OPTIONS, DESCRIBE (an SDP with one video track, payload type 26), SETUP (RTP over the RTSP TCP
connection only), PLAY and TEARDOWN; with a user and password it asks for Basic authentication (401 and a
realm) as cameras do. Frames come from ``frame()`` (an RGB array, width and height multiples of 8) at ``fps``;
each is JPEG-encoded with the standard Huffman tables and 4:2:0 sampling, its quantisation tables sent in band.
``reboot()`` drops every client and refuses connections for a while, as a camera restarting does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import struct
import time
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
MTU = 1400


def _segments(jpeg: bytes) -> tuple[bytes, bytes]:
    """The quantisation tables (luma then chroma, 64 bytes each) and the entropy-coded scan of a baseline JPEG."""
    tables, i = b"", 2
    while i < len(jpeg):
        if jpeg[i] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        body = jpeg[i + 4 : i + 2 + length]
        if marker == 0xDB:  # DQT: one or more (precision/id, 64 values) tables
            j = 0
            while j < len(body):
                tables += body[j + 1 : j + 65]
                j += 65
        elif marker == 0xDA:  # SOS: the scan runs to the EOI
            start = i + 2 + length
            end = jpeg.rindex(b"\xff\xd9")
            return tables, jpeg[start:end]
        i += 2 + length
    raise ValueError("no scan in the JPEG")


def rtp_jpeg(rgb: U8, seq: int, ts: int, ssrc: int, quality: int = 80) -> list[bytes]:
    """One frame as RTP/JPEG packets (RFC 2435: type 1 = 4:2:0, Q 255 = tables in the first packet)."""
    h, w = rgb.shape[:2]
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("the frame cannot be encoded")
    tables, scan = _segments(buf.tobytes())
    packets: list[bytes] = []
    offset = 0
    while offset < len(scan):
        header = struct.pack(">B3sBBBB", 0, offset.to_bytes(3, "big"), 1, 255, w // 8, h // 8)
        if offset == 0:
            header += struct.pack(">BBH", 0, 0, len(tables)) + tables
        chunk = scan[offset : offset + MTU - len(header)]
        offset += len(chunk)
        marker = 0x80 if offset >= len(scan) else 0
        rtp = struct.pack(">BBHII", 0x80, marker | 26, (seq + len(packets)) & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        packets.append(rtp + header + chunk)
    return packets


class IPCamera:
    def __init__(
        self,
        frame: Callable[[], U8],
        fps: float = 10.0,
        user: str | None = None,
        password: str | None = None,
        port: int = 0,
    ) -> None:
        self.frame, self.fps = frame, fps
        self.user, self.password = user, password
        self.port = port
        self.server: asyncio.Server | None = None
        self.clients: set[asyncio.StreamWriter] = set()
        self.sessions = 0  # PLAYs served
        self.refused = 0  # requests answered 401
        self._down_until = 0.0

    async def start(self) -> IPCamera:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, user: str | None = None, password: str | None = None, path: str = "stream1") -> str:
        cred = f"{user}:{password}@" if user is not None else ""
        return f"rtsp://{cred}127.0.0.1:{self.port}/{path}"

    async def reboot(self, down_s: float = 1.0) -> None:
        self._down_until = time.monotonic() + down_s
        for w in list(self.clients):
            w.close()

    async def stop(self) -> None:
        for w in list(self.clients):
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _authorised(self, headers: dict[str, str]) -> bool:
        if self.user is None:
            return True
        want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return headers.get("authorization", "") == f"Basic {want}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._down_until:
            writer.close()
            return
        self.clients.add(writer)
        streaming: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, url, _ = [*lines[0].split(" "), "", "", ""][:3]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                if int(headers.get("content-length", "0") or 0):
                    await reader.readexactly(int(headers["content-length"]))
                cseq = headers.get("cseq", "0")
                if not self._authorised(headers):
                    self.refused += 1
                    challenge = 'WWW-Authenticate: Basic realm="camera"'
                    writer.write(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n{challenge}\r\n\r\n".encode())
                    await writer.drain()
                    continue
                extra, body = "", ""
                if method == "OPTIONS":
                    extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
                elif method == "DESCRIBE":
                    h, w = self.frame().shape[:2]
                    body = (
                        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=gate camera\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                        f"m=video 0 RTP/AVP 26\r\na=control:track1\r\na=framerate:{self.fps:g}\r\n"
                        f"a=x-dimensions:{w},{h}\r\n"
                    )
                    base = url if url.endswith("/") else url + "/"
                    extra = f"Content-Base: {base}\r\nContent-Type: application/sdp\r\n"
                elif method == "SETUP":
                    if "interleaved" not in headers.get("transport", ""):
                        writer.write(f"RTSP/1.0 461 Unsupported Transport\r\nCSeq: {cseq}\r\n\r\n".encode())
                        await writer.drain()
                        continue
                    extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 4242;timeout=60\r\n"
                elif method == "PLAY":
                    extra = "Session: 4242\r\nRange: npt=0.000-\r\n"
                    self.sessions += 1
                elif method == "TEARDOWN":
                    writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 4242\r\n\r\n".encode())
                    await writer.drain()
                    return
                elif method == "GET_PARAMETER":
                    extra = "Session: 4242\r\n"
                else:
                    writer.write(f"RTSP/1.0 405 Method Not Allowed\r\nCSeq: {cseq}\r\n\r\n".encode())
                    await writer.drain()
                    continue
                length = f"Content-Length: {len(body)}\r\n" if body else ""
                writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}{length}\r\n{body}".encode())
                await writer.drain()
                if method == "PLAY" and streaming is None:
                    streaming = asyncio.create_task(self._stream(writer))
        finally:
            if streaming is not None:
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await streaming
            self.clients.discard(writer)
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        seq, ssrc, t0 = random.randrange(1 << 16), random.randrange(1 << 32), time.monotonic()
        period = 1.0 / self.fps
        n = 0
        while not writer.is_closing():
            ts = int((time.monotonic() - t0) * 90_000)
            packets = await asyncio.to_thread(rtp_jpeg, self.frame(), seq, ts, ssrc)
            seq += len(packets)
            for p in packets:
                writer.write(b"$\x00" + struct.pack(">H", len(p)) + p)
            await writer.drain()
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * period - time.monotonic()))
