"""A number-plate camera that has "seen" a vehicle: it sends ``PLATE,<plate>,<confidence>`` lines over a serial
link (``SerialAnpr``) or to whoever connects to its TCP port (``TcpAnpr``), as line-mode ANPR cameras do."""

from __future__ import annotations

import socket
import threading

import serial

from simulators.serial_link import SerialLink


def line(plate: str, confidence: float = 0.95) -> bytes:
    return f"PLATE,{plate},{confidence:.2f}\r\n".encode()


class SerialAnpr:
    def __init__(self) -> None:
        self.link = SerialLink()
        self.port = self.link.b  # the gateway opens this end
        self._ser = serial.Serial(self.link.a, 9600, timeout=0.1)

    def see(self, plate: str, confidence: float = 0.95) -> None:
        self._ser.write(line(plate, confidence))

    def send_raw(self, data: bytes) -> None:
        self._ser.write(data)

    def close(self) -> None:
        self._ser.close()
        self.link.close()


class TcpAnpr:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._srv = socket.create_server((host, 0))
        self.host, self.port = host, self._srv.getsockname()[1]
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        threading.Thread(target=self._accept, name="anpr-tcp", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(c)
            self._connected.set()

    def wait_client(self, timeout: float = 5.0) -> bool:
        return self._connected.wait(timeout)

    def see(self, plate: str, confidence: float = 0.95) -> None:
        with self._lock:
            for c in list(self._clients):
                try:
                    c.sendall(line(plate, confidence))
                except OSError:
                    self._clients.remove(c)

    def drop_clients(self) -> None:
        with self._lock:
            for c in self._clients:
                c.close()
            self._clients.clear()
            self._connected.clear()

    def close(self) -> None:
        self.drop_clients()
        self._srv.close()
