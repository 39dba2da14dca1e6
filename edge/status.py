"""The gateway's own status page and ``/healthz``: what a technician checks on site with a laptop, without the
cloud — the agent and its units, the outbox, the last contact with the cloud, camera and thermal frame rates
and the last decisions.

A small HTTP/1.1 server on the agent's event loop (``status.listen``, loopback by default: an SSH tunnel or
``status.listen: 0.0.0.0`` for a laptop on the gateway's network). Read-only; no keys, no faces, no resident
ids (a decision shows what was decided and why, not who); every text is escaped.

- ``GET /healthz``  → 200 ``ok`` or ``degraded`` (alive but offline, or a unit not running), 503 ``failing``
  (the disk is full) — JSON either way.
- ``GET /status.json`` → everything on the page, as JSON.
- ``GET /`` → the page (refreshes itself every 5 s, no script).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import ipaddress
import json
import logging
import shutil
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.agent import Agent

log = logging.getLogger("civicedge.edge.status")
MAX_REQUEST = 8192
MAX_CLIENTS = 8  # a page for one technician: more connections at once are closed at once
REQUEST_S = 5.0  # the whole exchange, reading and writing


class Rate:
    """Events per second over the last ``window_s`` (camera frames, thermal frames)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self) -> None:
        now = time.monotonic()
        self._times.append(now)
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def per_s(self) -> float:
        now = time.monotonic()
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        return round(len(self._times) / self.window_s, 2)


def collect(agent: Agent) -> dict[str, Any]:
    """The gateway's state as the page shows it."""
    ob, up = agent.outbox, agent.uplink
    online = up is not None and up.connected.is_set()
    try:
        disk_free: int | None = shutil.disk_usage(ob.path.parent).free
    except OSError:
        disk_free = None
    units = []
    for unit, task in agent.unit_tasks:
        state = "running"
        if task.done():
            state = "failed" if not task.cancelled() and task.exception() is not None else "stopped"
        units.append({"name": unit.name, "state": state, **unit.status()})
    storage = ob.storage
    if storage == "full":
        verdict = "failing"
    elif not online or any(u["state"] != "running" for u in units):
        verdict = "degraded"
    else:
        verdict = "ok"
    return {
        "status": verdict,
        "device": agent.config.device.id,
        "site": agent.config.device.site,
        "version": agent.version,
        "uptime_s": round(time.monotonic() - agent.started_monotonic, 1),
        "cloud": {
            "online": online,
            "broker": f"{agent.config.mqtt.host}:{agent.config.mqtt.port}",
            "last_publish_ms": up.last_publish_ms if up else None,
            "connects": up.connects if up else 0,
        },
        "outbox": {
            "depth": ob.depth(),
            "bytes": ob.used_bytes,
            "budget_bytes": ob.budget_bytes,
            "storage": storage,
            "shed": ob.shed_counts(),
            "refused": ob.refused_counts(),
            "disk_free_bytes": disk_free,
        },
        "units": units,
    }


_COLOUR = {"ok": "#1b873f", "degraded": "#b7791f", "failing": "#c53030", "running": "#1b873f"}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    return html.escape("—" if value is None else str(value))


def _counts(counts: dict[str, int]) -> str:
    return html.escape(", ".join(f"{k} {v}" for k, v in counts.items()) or "none")


def _ago(ms: int | None) -> str:
    if not ms:
        return "never"
    s = max(0.0, time.time() - ms / 1000)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def page(state: dict[str, Any]) -> str:
    e = html.escape
    verdict = state["status"]
    ob, cloud = state["outbox"], state["cloud"]
    rows = []
    for u in state["units"]:
        decisions = u.pop("decisions", [])
        detail = "".join(
            f"<tr><th>{e(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in u.items() if k not in ("name", "state")
        )
        dec_rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{_cell(d.get(k))}</td>" for k in ("at", "decision", "reason", "method", "score", "latency_ms")
            )
            + "</tr>"
            for d in reversed(decisions)
        )
        dec_table = (
            "<table class=dec><tr><th>at</th><th>decision</th><th>reason</th><th>method</th><th>score</th>"
            f"<th>ms</th></tr>{dec_rows}</table>"
            if decisions
            else ""
        )
        colour = _COLOUR.get(u["state"], "#c53030")
        rows.append(
            f"<section><h2><span class=dot style='background:{colour}'></span>{e(u['name'])} "
            f"<small>{e(u['state'])}</small></h2><table>{detail}</table>{dec_table}</section>"
        )
    depth = ", ".join(f"{e(k)} {v}" for k, v in ob["depth"].items() if v) or "empty"
    free = ob["disk_free_bytes"]
    link_colour = _COLOUR["ok" if cloud["online"] else "degraded"]
    last_sent = _ago(cloud["last_publish_ms"])
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=5>
<meta name=viewport content="width=device-width,initial-scale=1">
<title>{e(state["device"])} — CivicEdge gateway</title>
<style>
body{{font:15px/1.4 system-ui,sans-serif;margin:1rem auto;max-width:60rem;padding:0 1rem;color:#1a202c}}
.banner{{color:#fff;background:{_COLOUR[verdict]};padding:.6rem 1rem;border-radius:.4rem;font-size:1.2rem}}
table{{border-collapse:collapse;margin:.4rem 0}}
th,td{{text-align:left;padding:.15rem .6rem;border-bottom:1px solid #e2e8f0}} th{{color:#4a5568;font-weight:500}}
.dot{{display:inline-block;width:.8rem;height:.8rem;border-radius:50%;margin-right:.4rem}}
section{{border:1px solid #e2e8f0;border-radius:.4rem;padding:.2rem 1rem;margin:.8rem 0}} small{{color:#718096}}
</style></head><body>
<div class=banner>{e(state["device"])} · {e(verdict)}</div>
<section><h2>Agent</h2><table>
<tr><th>site</th><td>{e(state["site"])}</td></tr>
<tr><th>version</th><td>{e(state["version"])}</td></tr>
<tr><th>up for</th><td>{state["uptime_s"]:.0f} s</td></tr>
<tr><th>cloud</th><td><span class=dot style='background:{link_colour}'></span>
{"online" if cloud["online"] else "offline"} ({e(cloud["broker"])}), last sent {last_sent}</td></tr>
<tr><th>outbox</th><td>{depth} · {ob["bytes"] // 1024} KiB of {ob["budget_bytes"] // 1048576} MiB</td></tr>
<tr><th>storage</th><td>{e(ob["storage"])}{"" if free is None else f" · {free // 1048576} MiB free"}</td></tr>
<tr><th>shed / refused</th><td>{_counts(ob["shed"])} / {_counts(ob["refused"])}</td></tr>
</table></section>
{"".join(rows)}
<p><small>Refreshes every 5 s · <a href=/status.json>status.json</a> · <a href=/healthz>healthz</a></small></p>
</body></html>"""


class StatusServer:
    def __init__(self, agent: Agent, host: str, port: int) -> None:
        self.agent, self.host, self.port = agent, host, port
        self.server: asyncio.Server | None = None
        self.requests = 0
        self.turned_away = 0
        self._slots = asyncio.Semaphore(MAX_CLIENTS)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("status page", extra={"url": f"http://{self.host}:{self.port}/"})

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():  # busy: no queue of idle sockets eating the agent's file descriptors
            self.turned_away += 1
            writer.close()
            return
        async with self._slots:
            try:
                async with asyncio.timeout(REQUEST_S):
                    await self._exchange(reader, writer)
            except (TimeoutError, ConnectionError):
                pass
            finally:
                writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, *_ = [*lines[0].split(" "), "", ""]
            host = next((v.strip() for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "host"), "")
            self.requests += 1
            if not self._host_ok(host):
                status, ctype, body = 421, "text/plain", b"unknown Host: open the page by the gateway's address\n"
            else:
                status, ctype, body = self._answer(method, target.split("?", 1)[0])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except Exception:  # a page that cannot be made must not leave the socket open or stop the agent
            log.exception("status page failed")
            status, ctype, body = 500, "text/plain", b"status unavailable: see the agent's log\n"
        writer.write(
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
            "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    def _host_ok(self, host: str) -> bool:
        """Only the names the gateway is reached by: an IP address or localhost. A page elsewhere that points a
        name of its own at the gateway (DNS rebinding, through a technician's SSH tunnel) is refused."""
        name = host[1 : host.find("]")] if host.startswith("[") else host.split(":", 1)[0]
        if name in ("localhost", self.host):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"read-only: GET only\n"
        if path not in ("/", "/healthz", "/status.json"):
            return 404, "text/plain", b"not found: try / or /healthz\n"
        state = collect(self.agent)
        if path == "/healthz":
            body = {
                "status": state["status"],
                "online": state["cloud"]["online"],
                "storage": state["outbox"]["storage"],
            }
            return (503 if state["status"] == "failing" else 200), "application/json", json.dumps(body).encode()
        if path == "/status.json":
            return 200, "application/json", json.dumps(state, ensure_ascii=False).encode()
        return 200, "text/html; charset=utf-8", page(state).encode()
