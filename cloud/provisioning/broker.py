"""Broker lockdown with Mosquitto's dynamic-security plugin.

* :func:`write_broker_files` writes what a locked-down Mosquitto starts from: anonymous access off, the plugin
  with an initial ``dynamic-security.json`` (the cloud's own users), a TLS listener with the project CA.
* :class:`BrokerAdmin` is the cloud's runtime control: each provisioned device becomes a broker client with
  its own role, allowed to publish only under ``ce/v1/{site}/{device}/`` on the uplink channels and to
  subscribe only to its own ``cmd``, ``cfg`` and ``gallery``; revoking disables the client (the broker drops
  its connection at once); rotating sets a new password.

Users of the cloud itself: ``ce-ingest`` (reads every device topic) and ``ce-cloud`` (publishes commands,
configuration and galleries, and administers the plugin).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.provisioning.pki import issue_server_cert, make_ca
from protocol.limits import MAX_PAYLOAD_BYTES
from protocol.topics import PREFIX, UPLINK, Channel

CONTROL = "$CONTROL/dynamic-security/v1"
PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
ITERATIONS = 101  # the plugin's own default for PBKDF2-SHA512


class BrokerError(RuntimeError):
    pass


def plugin_path() -> str:
    for p in PLUGIN_PATHS:
        if Path(p).exists():
            return p
    raise BrokerError("Mosquitto's dynamic-security plugin is missing: apt-get install mosquitto (2.0 or newer)")


def new_password() -> str:
    return secrets.token_urlsafe(24)


def _client_entry(username: str, password: str, role: str, text: str) -> dict[str, Any]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS, 64)
    return {
        "username": username,
        "textName": text,
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": ITERATIONS,
        "roles": [{"rolename": role}],
    }


def _acl(kind: str, topic: str, allow: bool = True) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "allow": allow}


def device_acls(site: str, device: str) -> list[dict[str, Any]]:
    base = f"{PREFIX}/{site}/{device}"
    acls = []
    for ch in sorted(UPLINK):
        acls += [_acl("publishClientSend", f"{base}/{ch.value}"), _acl("publishClientSend", f"{base}/{ch.value}/#")]
    for ch in (Channel.CMD, Channel.CFG, Channel.GALLERY):
        acls += [_acl("subscribePattern", f"{base}/{ch.value}"), _acl("subscribePattern", f"{base}/{ch.value}/#")]
    return acls


def cloud_roles() -> list[dict[str, Any]]:
    down = [f"{PREFIX}/+/+/{ch.value}" for ch in (Channel.CMD, Channel.CFG, Channel.GALLERY)]
    return [
        {
            "rolename": "ce-ingest",
            "acls": [_acl("subscribePattern", f"{PREFIX}/#"), _acl("subscribePattern", f"$share/+/{PREFIX}/#")],
        },
        {
            "rolename": "ce-cloud",
            "acls": [
                *[_acl("publishClientSend", t) for t in down],
                *[_acl("publishClientSend", t + "/#") for t in down],
                _acl("publishClientSend", f"{CONTROL}/#"),
                _acl("publishClientSend", CONTROL),
                _acl("subscribePattern", f"{CONTROL}/#"),
                _acl("publishClientReceive", f"{CONTROL}/#"),
            ],
        },
    ]


def write_broker_files(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    tls_port: int | None = 8883,
    tls_bind: str = "0.0.0.0",
    tls_hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ingest_password: str | None = None,
    cloud_password: str | None = None,
) -> dict[str, Any]:
    """Write ``mosquitto.conf``, ``dynamic-security.json`` (mode 0600) and the CA / server certificate into
    ``directory``; return the paths and the cloud's passwords (shown once: put them in the cloud's settings).
    The plain listener (the cloud's own workers) is bound to ``host``, loopback unless said otherwise; devices
    use the TLS listener on ``tls_bind``."""
    directory.mkdir(parents=True, exist_ok=True)
    ingest_password = ingest_password or new_password()
    cloud_password = cloud_password or new_password()
    dynsec = {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": [
            _client_entry("ce-ingest", ingest_password, "ce-ingest", "cloud ingestion workers"),
            _client_entry("ce-cloud", cloud_password, "ce-cloud", "cloud commands and broker administration"),
        ],
        "groups": [],
        "roles": cloud_roles(),
    }
    dyn_path = directory / "dynamic-security.json"
    dyn_path.touch(mode=0o600)
    dyn_path.write_text(json.dumps(dynsec, indent=1))
    out: dict[str, Any] = {"conf": directory / "mosquitto.conf", "dynsec": dyn_path, "ca": None}
    tls = ""
    if tls_port is not None:
        ca, ca_key = make_ca(directory)
        cert, key = issue_server_cert(directory, ca, ca_key, list(tls_hosts))
        tls = f"listener {tls_port} {tls_bind}\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\ntls_version tlsv1.2\n"
        out["ca"] = ca
    out["security"] = security_conf(dyn_path)
    out["tls"] = tls
    out["conf"].write_text(f"{out['security']}listener {port} {host}\n{tls}")
    out |= {"ingest_password": ingest_password, "cloud_password": cloud_password}
    return out


def security_conf(dynsec_file: Path) -> str:
    """The lines that lock a Mosquitto down (first in its configuration file), and its limits:

    - ``max_packet_size``: a client that sends a packet larger than a message may be (the protocol's payload limit
      with room for the topic) is disconnected before the cloud reads anything; ``message_size_limit``: a payload
      past the protocol's limit is dropped by the broker;
    - ``max_inflight_messages``: an ingestion worker acknowledges a message only once its batch is stored, so the
      broker must let a whole batch be in flight to it (Mosquitto's default, 20, would cap every batch at 20);
    - ``max_queued_messages 0`` with ``max_queued_bytes``: what waits for a slow worker is bounded by size, not by a
      count of 1,000 beyond which Mosquitto drops QoS 1 messages without a word.
    """
    return (
        f"per_listener_settings false\nallow_anonymous false\nplugin {plugin_path()}\n"
        f"plugin_opt_config_file {dynsec_file}\nmax_packet_size {MAX_PACKET_BYTES}\n"
        f"message_size_limit {MAX_PAYLOAD_BYTES}\n"
        f"max_inflight_messages {MAX_INFLIGHT}\nmax_queued_messages 0\nmax_queued_bytes {MAX_QUEUED_BYTES}\n"
    )


#: the largest MQTT packet the broker accepts: a full payload (protocol.limits) with generous room for the rest
MAX_PACKET_BYTES = 4 * MAX_PAYLOAD_BYTES
#: messages in flight to one client (a worker's batch is unacknowledged until stored: CE_INGEST_BATCH_ROWS fits)
MAX_INFLIGHT = 1000
#: bytes the broker queues for one client that is behind or away (a day of a busy district for the workers)
MAX_QUEUED_BYTES = 2 * 1024**3


class BrokerAdmin:
    """Runtime commands to the dynamic-security plugin (one at a time, each awaited with its answer)."""

    def __init__(self, host: str, port: int, username: str, password: str | None, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._answer: dict[str, Any] | None = None
        self._got = threading.Event()
        self._ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ce-broker-admin-{secrets.token_hex(4)}")
        c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 10)
        self.client = c
        self.host, self.port = host, port

    def _on_connect(self, c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object = None) -> None:
        if not rc.is_failure:
            c.subscribe(f"{CONTROL}/response", qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._answer = json.loads(msg.payload)
        self._got.set()

    def start(self) -> None:
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def run(self, *commands: dict[str, Any], ok_errors: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Send commands; raise BrokerError naming the first that failed (unless its error is in ``ok_errors``)."""
        if not self._ready.wait(self.timeout_s):
            raise BrokerError(f"broker admin not connected to {self.host}:{self.port}")
        with self._lock:
            self._got.clear()
            info = self.client.publish(CONTROL, json.dumps({"commands": list(commands)}), qos=1)
            info.wait_for_publish(self.timeout_s)
            if not self._got.wait(self.timeout_s):
                raise BrokerError("the broker did not answer a dynamic-security command")
            answers: list[dict[str, Any]] = (self._answer or {}).get("responses", [])
        for a in answers:
            err = a.get("error")
            if err and not any(e in err for e in ok_errors):
                raise BrokerError(f"{a.get('command')}: {err}")
        return answers

    # --- devices ---------------------------------------------------------------------------------------

    def add_device(self, site: str, device: str, password: str) -> None:
        role = f"device:{device}"
        self.run(
            {"command": "createRole", "rolename": role, "acls": device_acls(site, device)},
            {
                "command": "createClient",
                "username": device,
                "password": password,
                "textname": f"{site}/{device}",
                "roles": [{"rolename": role}],
            },
            ok_errors=("already exists",),
        )
        # a device provisioned again (replaced board): the new password, enabled
        self.run(
            {"command": "setClientPassword", "username": device, "password": password},
            {"command": "enableClient", "username": device},
        )

    def set_password(self, device: str, password: str) -> None:
        self.run({"command": "setClientPassword", "username": device, "password": password})

    def disable(self, device: str) -> None:
        """The device's connection is dropped and it cannot log in again."""
        self.run({"command": "disableClient", "username": device})

    def enable(self, device: str) -> None:
        self.run({"command": "enableClient", "username": device})
