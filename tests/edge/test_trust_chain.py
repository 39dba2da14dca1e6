"""Whoever holds the broker still cannot open a door, re-key a gateway or roll its code back.

The attacker here has full publish rights on every topic of a real Mosquitto, in front of a running gate gateway
and a running barrier gateway. The test also plays the cloud (it holds the command, document and update keys)
to set up what a real site has: a gallery, an allow-list, a retained config. Every attack is refused, reported
by the device with its reason, and the door and the barrier stay shut. Then each key is rotated on a running
gateway, and a restart from the original config file does not bring the old keys back.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from edge.agent import Agent
from protocol import encode, envelope, sign_command, topic
from protocol.messages import AllowlistDelta, Body, ConfigDocument, GalleryDelta, GalleryEntry, PlateEntry
from protocol.signing import generate_key, public_key_b64, sign_document, sign_rotation
from protocol.updates import build_bundle
from simulators.anpr import SerialAnpr
from simulators.ioboard import IOBoardSim
from simulators.modbus_relay import ModbusRelaySim
from simulators.services import Mosquitto
from tests.cloud.test_gate_flow import gate_units
from tests.mqtt_helpers import Collector
from tests.waits import until

SITE = "riverside"
CMD, DOC, UPD = generate_key(), generate_key(), generate_key()  # the cloud's three keys
ATTACKER = generate_key()
BARRIER, LOOP = 0, 0


def _face(seed: int) -> str:
    v = np.random.default_rng(seed).normal(size=128).astype("<f4")
    return base64.b64encode((v / np.linalg.norm(v)).astype("<f4").tobytes()).decode()


def intruder_entry() -> GalleryEntry:
    return GalleryEntry(resident_id="intruder", embedding_b64=_face(666))


def _wire(body: Body, device: str) -> bytes:
    return encode(envelope(body, dev=device, seq=0))


def _doc(body: Body, device: str, key: Any = DOC) -> bytes:
    return _wire(sign_document(key, body, device), device)


class Broker:
    """Anyone with publish rights on every topic: the cloud, and the attacker."""

    def __init__(self, m: Mosquitto) -> None:
        self.m = m

    async def send(self, device: str, channel: str, payload: bytes, *, name: str | None = None) -> None:
        t = topic(SITE, device, channel, name) if name else topic(SITE, device, channel)
        async with aiomqtt.Client(self.m.host, self.m.port) as c:
            await c.publish(t, payload, qos=1, retain=channel == "cfg")

    async def command(self, device: str, name: str, args: dict[str, Any] | None = None, key: Any = CMD) -> bytes:
        raw = _wire(sign_command(key, device=device, name=name, args=args or {}), device)
        await self.send(device, "cmd", raw, name=name)
        return raw


def _refusals(col: Collector, code: str, device: str) -> list[str]:
    return [e.body.details.get("reason") for e in col.events(code) if e.dev == device]  # type: ignore[attr-defined]


def _acks(col: Collector, device: str) -> list[tuple[str, str, str]]:
    return [
        (e.body.name, e.body.status, (e.body.reason or "").split(":")[0])  # type: ignore[attr-defined]
        for e in col.of_type("command.ack")
        if e.dev == device
    ]


def _barrier_unit(tmp_path: Path, relay: ModbusRelaySim, camera: SerialAnpr) -> dict[str, Any]:
    return {
        "type": "barrier",
        "lane": "north-in",
        "io": {"type": "modbus", "port": relay.port, "outputs": {"barrier": BARRIER}, "inputs": {"loop": LOOP}},
        "anpr": {"type": "serial", "port": camera.port},
        "open_s": 1.0,
        "clear_s": 0.3,
        "allowlist": str(tmp_path / "allow.db"),
    }


async def test_a_broker_level_attacker_is_refused_everything_and_every_refusal_is_reported(
    tmp_path: Path, mosquitto: Mosquitto, run_agent: Any
) -> None:
    keys = {"public_key": public_key_b64(CMD), "document_key": public_key_b64(DOC)}
    (tmp_path / "versions").mkdir()
    board, relay, camera = IOBoardSim(), ModbusRelaySim(unit_id=1), SerialAnpr()
    net = Broker(mosquitto)
    try:
        async with Collector(mosquitto.host, mosquitto.port) as col:
            gate: Agent = await run_agent(
                device="gate-01",
                **keys,
                units=gate_units(tmp_path, board),
                updates={"root": str(tmp_path), "public_key": public_key_b64(UPD)},
            )
            barrier: Agent = await run_agent(
                device="barrier-01", **keys, units=[_barrier_unit(tmp_path, relay, camera)]
            )
            for a in (gate, barrier):
                assert a.uplink is not None
                await until(a.uplink.connected.is_set, 10, "the gateways to connect")
            await col.wait_for(lambda c: c.events("gallery.status") and c.events("agent.started"))
            g, b = gate.units[0], barrier.units[0]

            # --- a new gate holds no gallery: an old signed snapshot (the attacker kept one) is not its answer ----
            asked = col.events("gallery.status")[-1].body.details  # type: ignore[attr-defined]
            assert asked["revision"] == 0 and asked["nonce"] == gate.trust.nonce
            res1 = GalleryEntry(resident_id="res-1", embedding_b64=_face(1))
            old_copy = GalleryDelta(revision=9000, upserts=[res1, intruder_entry()], nonce="an-old-request")
            kept = _doc(old_copy, "gate-01")
            await net.send("gate-01", "gallery", kept)
            await col.wait_for(lambda c: _refusals(c, "gallery.rejected", "gate-01") == ["stale_revision"])

            # --- what the real cloud set up: a gallery, an allow-list, a retained config -----------------------
            snapshot = _doc(GalleryDelta(revision=1000, upserts=[res1], nonce=gate.trust.nonce), "gate-01")
            await net.send("gate-01", "gallery", snapshot)
            await net.send(
                "gate-01",
                "gallery",
                _doc(
                    GalleryDelta(
                        revision=2000,
                        base_revision=1000,
                        upserts=[GalleryEntry(resident_id="res-2", embedding_b64=_face(2))],
                    ),
                    "gate-01",
                ),
            )
            await net.send(
                "barrier-01",
                "gallery",
                _doc(
                    AllowlistDelta(
                        revision=1000, upserts=[PlateEntry(plate="京A12340", holder="res-1")], nonce=barrier.trust.nonce
                    ),
                    "barrier-01",
                ),
            )
            old_config = _doc(ConfigDocument(revision=1, doc={"log_level": "info"}), "gate-01")
            await net.send("gate-01", "cfg", old_config)
            await col.wait_for(lambda c: c.events("config.applied"))
            await net.send("gate-01", "cfg", _doc(ConfigDocument(revision=2, doc={"log_level": "warning"}), "gate-01"))
            await col.wait_for(lambda c: len(c.events("config.applied")) == 2 and len(c.events("gallery.applied")) == 2)
            await col.wait_for(lambda c: c.events("allowlist.applied"))
            assert g.gallery.revision == 2000 and set(g.gallery.residents) == {"res-1", "res-2"}

            # --- re-key the gateway through its retained config ------------------------------------------------
            rekey = ConfigDocument(revision=99, doc={"commands": {"public_key": public_key_b64(ATTACKER)}})
            await net.send("gate-01", "cfg", _wire(rekey, "gate-01"))  # unsigned
            await net.send("gate-01", "cfg", _doc(rekey, "gate-01", ATTACKER))  # signed with the attacker's key
            await net.send("gate-01", "cfg", old_config)  # the old retained config, replayed
            await col.wait_for(lambda c: len(_refusals(c, "config.rejected", "gate-01")) == 3)
            assert _refusals(col, "config.rejected", "gate-01") == ["unsigned", "bad_signature", "stale_revision"]
            # even the document key cannot change a pinned key: keys change by an endorsed rotation only
            await net.send("gate-01", "cfg", _doc(rekey, "gate-01"))
            await col.wait_for(lambda c: len(_refusals(c, "config.rejected", "gate-01")) == 4)
            assert "pinned_key" in col.events("config.rejected")[-1].body.message  # type: ignore[attr-defined]
            assert gate.trust.public_keys()["commands"] == public_key_b64(CMD)

            # --- add a face, replay an old snapshot, take another gate's delta ---------------------------------
            intruder = intruder_entry()
            mine = GalleryDelta(revision=3000, base_revision=2000, upserts=[intruder])
            await net.send("gate-01", "gallery", _wire(mine, "gate-01"))
            await net.send("gate-01", "gallery", _doc(mine, "gate-01", ATTACKER))
            await net.send("gate-01", "gallery", snapshot)
            await net.send("gate-01", "gallery", _wire(sign_document(DOC, mine, "gate-02"), "gate-01"))
            await col.wait_for(lambda c: len(_refusals(c, "gallery.rejected", "gate-01")) == 5)
            assert _refusals(col, "gallery.rejected", "gate-01") == [
                "stale_revision",
                "unsigned",
                "bad_signature",
                "stale_revision",
                "bad_signature",
            ]
            assert g.gallery.revision == 2000 and "intruder" not in g.gallery.residents

            # --- add a plate, then drive up with it --------------------------------------------------------------
            plate = AllowlistDelta(revision=5000, upserts=[PlateEntry(plate="沪B99999", holder="intruder")])
            await net.send("barrier-01", "gallery", _wire(plate, "barrier-01"))
            await net.send("barrier-01", "gallery", _doc(plate, "barrier-01", ATTACKER))
            await col.wait_for(lambda c: len(_refusals(c, "allowlist.rejected", "barrier-01")) == 2)
            assert _refusals(col, "allowlist.rejected", "barrier-01") == ["unsigned", "bad_signature"]
            camera.see("沪B99999")
            await until(lambda: b.decisions, 5, "the barrier to decide on the intruder's car")
            assert b.decisions[-1].decision != "open" and not relay.coil(BARRIER)

            # --- forged and replayed commands ------------------------------------------------------------------
            await net.command("gate-01", "open-door", {"by": "x"}, key=ATTACKER)
            await net.command("barrier-01", "barrier-open", {}, key=ATTACKER)
            forged = sign_command(CMD, device="gate-01", name="ping").model_copy(update={"name": "open-door"})
            await net.send("gate-01", "cmd", _wire(forged, "gate-01"), name="open-door")  # a signed one, altered
            # a resident's visitor pass, sent by the cloud, then replayed by the attacker
            issued = await net.command("gate-01", "visitor-pass", {"code": "4321", "issued_by": "res-1"})
            await col.wait_for(lambda c: ("visitor-pass", "ok", "") in _acks(c, "gate-01"))
            await net.send("gate-01", "cmd", issued, name="visitor-pass")
            # a rotation the attacker endorsed, inside a command the cloud signed (a leaked command key)
            endorsed = sign_rotation(
                ATTACKER, device="gate-01", role="documents", new_public_key=public_key_b64(ATTACKER)
            )
            await net.command(
                "gate-01",
                "rotate-key",
                {"role": "documents", "public_key": public_key_b64(ATTACKER), "endorsement": endorsed},
            )
            # an older update bundle, properly signed, behind a valid update command (a swapped download)
            src = tmp_path / "old-release"
            (src / "edge").mkdir(parents=True)
            (src / "edge" / "__init__.py").write_text("__version__ = '0.0.1'\n")
            old = tmp_path / "old.tar.gz"
            old.write_bytes(build_bundle(src, kind="gateway", version="0.0.1", key=UPD))
            await net.command(
                "gate-01", "update", {"rollout": "ro-1", "url": old.as_uri(), "version": "0.0.1", "timeout_s": 30}
            )
            await col.wait_for(lambda c: len(_acks(c, "gate-01")) == 6 and _acks(c, "barrier-01"))
            assert _acks(col, "gate-01") == [
                ("open-door", "refused", "bad_signature"),
                ("open-door", "refused", "bad_signature"),
                ("visitor-pass", "ok", ""),
                ("visitor-pass", "refused", "replayed"),
                ("rotate-key", "error", "bad_signature"),
                ("update", "error", "update refused"),
            ]
            assert _acks(col, "barrier-01") == [("barrier-open", "refused", "bad_signature")]
            statuses = [(e.body.state, e.body.reason) for e in col.of_type("update.status")]  # type: ignore[attr-defined]
            assert statuses[-1] == ("refused", "rollback")
            assert _refusals(col, "trust.rotation_refused", "gate-01") == ["bad_signature"]

            # the door and the barrier never moved, and nothing the attacker sent is held
            assert board.pulses(0) == [] and not board.output(0)
            assert not relay.coil(BARRIER)
            assert gate.trust.public_keys()["documents"] == public_key_b64(DOC)
            assert not (tmp_path / "versions" / "0.0.1").exists()
    finally:
        board.close()
        relay.close()
        camera.close()


async def test_each_key_rotates_on_a_running_gateway_and_a_restart_keeps_the_new_keys(
    tmp_path: Path, mosquitto: Mosquitto, run_agent: Any
) -> None:
    keys = {"public_key": public_key_b64(CMD), "document_key": public_key_b64(DOC)}
    updates = {"root": str(tmp_path), "public_key": public_key_b64(UPD)}
    (tmp_path / "versions").mkdir()
    net = Broker(mosquitto)
    cmd2, doc2, upd2 = generate_key(), generate_key(), generate_key()
    async with Collector(mosquitto.host, mosquitto.port) as col:
        agent: Agent = await run_agent(device="gw-01", **keys, updates=updates)
        assert agent.uplink is not None
        await until(agent.uplink.connected.is_set, 10, "the gateway to connect")

        async def rotate(role: str, current: Any, new: Any, sign_with: Any) -> None:
            args = {
                "role": role,
                "public_key": public_key_b64(new),
                "endorsement": sign_rotation(current, device="gw-01", role=role, new_public_key=public_key_b64(new)),
            }
            n = len(col.events("trust.rotated"))
            await net.command("gw-01", "rotate-key", args, key=sign_with)
            await col.wait_for(lambda c: len(c.events("trust.rotated")) == n + 1)

        await rotate("commands", CMD, cmd2, CMD)
        await net.command("gw-01", "ping", key=CMD)  # the old command key no longer works
        await net.command("gw-01", "ping", key=cmd2)
        await col.wait_for(lambda c: len([a for a in _acks(c, "gw-01") if a[0] == "ping"]) == 2)
        assert [a for a in _acks(col, "gw-01") if a[0] == "ping"] == [
            ("ping", "refused", "bad_signature"),
            ("ping", "ok", ""),
        ]
        await rotate("documents", DOC, doc2, cmd2)
        await net.send("gw-01", "cfg", _doc(ConfigDocument(revision=1, doc={"log_level": "info"}), "gw-01"))
        await col.wait_for(lambda c: c.events("config.rejected"))
        await net.send("gw-01", "cfg", _doc(ConfigDocument(revision=1, doc={"log_level": "info"}), "gw-01", doc2))
        await col.wait_for(lambda c: c.events("config.applied"))
        # a config document (even signed with the current key) cannot name the environment or move the database
        for rev, patch in (
            (2, {"${NOPE:-commands}": {"public_key": public_key_b64(ATTACKER)}}),
            (3, {"outbox": {"path": str(tmp_path / "fresh.db")}}),
        ):
            n = len(col.events("config.rejected"))
            await net.send("gw-01", "cfg", _doc(ConfigDocument(revision=rev, doc=patch), "gw-01", doc2))
            await col.wait_for(lambda c, n=n: len(c.events("config.rejected")) == n + 1)
            assert "pinned_key" in col.events("config.rejected")[-1].body.message  # type: ignore[attr-defined]
        await rotate("updates", UPD, upd2, cmd2)
        assert agent.trust.public_keys() == {
            "commands": public_key_b64(cmd2),
            "documents": public_key_b64(doc2),
            "updates": public_key_b64(upd2),
        }
        assert await run_agent.stop(agent) == 0
        # started again from the same, original config file: the pinned (rotated) keys stay, and it says so
        again: Agent = await run_agent(device="gw-01", **keys, updates=updates)
        await col.wait_for(lambda c: c.events("trust.key_mismatch"))
        assert again.trust.public_keys()["commands"] == public_key_b64(cmd2)
        assert set(col.events("trust.key_mismatch")[-1].body.details["roles"]) == {  # type: ignore[attr-defined]
            "commands",
            "documents",
            "updates",
        }


async def test_a_technician_re_pins_on_site_and_sees_what_is_pinned(
    tmp_path: Path, mosquitto: Mosquitto, run_agent: Any
) -> None:
    from typer.testing import CliRunner

    from civicedge_cli import app
    from simulators.fleet import agent_config, write_config

    agent: Agent = await run_agent(device="gw-02", public_key=public_key_b64(CMD), document_key=public_key_b64(DOC))
    assert await run_agent.stop(agent) == 0
    new = generate_key()
    doc = agent_config(tmp_path, device="gw-02", public_key=public_key_b64(new), document_key=public_key_b64(DOC))
    path = write_config(tmp_path / "gw-02.yaml", doc)
    shown = CliRunner().invoke(app, ["edge", "trust", "--config", str(path)])
    assert shown.exit_code == 0 and public_key_b64(CMD) in shown.output and "ignored" in shown.output
    refused = CliRunner().invoke(app, ["edge", "trust-reset", "--config", str(path)])
    assert refused.exit_code == 2 and "--yes" in refused.output
    done = CliRunner().invoke(app, ["edge", "trust-reset", "--config", str(path), "--yes"])
    assert done.exit_code == 0 and "forgot 2 pinned key(s)" in done.output
    again: Agent = await run_agent(device="gw-02", public_key=public_key_b64(new), document_key=public_key_b64(DOC))
    assert again.trust.public_keys()["commands"] == public_key_b64(new) and not again.trust.mismatched


async def test_a_command_held_back_by_the_broker_is_refused_whatever_the_gateway_clock_says(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A gateway without a real-time clock comes back from a reboot an hour in the past. The broker delivers an
    ``open-door`` it held back since before a later command was accepted: the signed issue time of that later
    command proved the cloud's clock past the held one's deadline, so it is refused, after a restart too."""
    import asyncio

    from edge.commands import CommandProcessor
    from edge.outbox import Outbox
    from edge.trust import Trust
    from protocol.topics import parse

    outbox = await Outbox(tmp_path / "gw.db", "gw-03").open()
    trust = Trust("gw-03", {"commands": public_key_b64(CMD)}, outbox)
    await trust.load()
    proc = CommandProcessor("gw-03", outbox, trust)
    opened: list[dict[str, Any]] = []

    async def open_door(args: dict[str, Any]) -> dict[str, Any]:
        opened.append(args)
        return {"opened": True}

    async def ping(args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True}

    proc.register("open-door", open_door)
    proc.register("ping", ping)
    held = sign_command(CMD, device="gw-03", name="open-door", args={"by": "res-7"}, ttl_ms=50)
    await asyncio.sleep(0.1)
    later = sign_command(CMD, device="gw-03", name="ping")
    assert held.issued_ms is not None
    monkeypatch.setattr("edge.trust.now_ms", lambda: held.issued_ms - 3_600_000)  # the clock an hour back

    def on(name: str) -> Any:
        return parse(topic(SITE, "gw-03", "cmd", name))

    assert await proc.handle(on("ping"), _wire(later, "gw-03")) == "ok"
    assert await proc.handle(on("open-door"), _wire(held, "gw-03")) == "refused:expired"
    again = Trust("gw-03", {"commands": public_key_b64(CMD)}, outbox)  # a restart: the floor is kept
    await again.load()
    assert again.floor == trust.floor and again.floor >= later.issued_ms
    assert opened == []
    await outbox.close()


async def test_a_gateway_signs_what_it_says_with_its_own_key(tmp_path: Path) -> None:
    """Events, alarms, pictures and acknowledgements leave the outbox signed by the gateway's own key over id,
    device, clock, type and body; readings do not (the high-rate lane). Every one verifies after the wire."""
    from edge.outbox import Outbox
    from protocol.codec import decode
    from protocol.errors import SignatureError
    from protocol.messages import AlarmRaise, DeviceEvent, MediaSnapshot
    from protocol.signing import load_public_key, verify_uplink

    own = generate_key()
    pub = load_public_key(public_key_b64(own))
    async with Outbox(tmp_path / "outbox.db", "gate-01", signer=own) as ob:
        await ob.put(DeviceEvent(code="gallery.status", details={"revision": 0, "nonce": "n" * 16, "none": None}))
        await ob.put(AlarmRaise(key="door:held", code="door.held", severity="warning", message="门未关 <b>"))
        await ob.put(MediaSnapshot(ref="s1", content_type="image/jpeg", data_b64="/9j/AA==", purpose="visitor_request"))
        await ob.put_reading("t", 21.5)
        sent = await ob.fetch(10, {})
    envs = [decode(m.payload) for m in sent]
    assert sorted(e.type for e in envs) == ["alarm.raise", "event", "media.snapshot", "telemetry"]
    for env in envs:
        if env.type == "telemetry":
            assert env.sig is None
            continue
        verify_uplink(pub, env)  # as the cloud checks it
        other = env.model_copy(update={"ts": env.ts + 1})  # its clock moved by a millisecond: no longer its word
        try:
            verify_uplink(pub, other)
        except SignatureError as exc:
            assert exc.reason.value == "bad_signature"
        else:
            raise AssertionError("an altered message verified")


def test_keygen_and_check_config_tell_a_technician_about_the_gateway_key(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from civicedge_cli import app
    from protocol.signing import load_private_key
    from simulators.fleet import agent_config, write_config

    key = tmp_path / "keys" / "signing-key.pem"
    made = CliRunner().invoke(app, ["edge", "keygen", "--out", str(key)])
    assert made.exit_code == 0, made.output
    assert key.stat().st_mode & 0o777 == 0o600
    assert made.stdout.strip() == public_key_b64(load_private_key(key.read_bytes()))  # what the cloud registers
    again = CliRunner().invoke(app, ["edge", "keygen", "--out", str(key)])
    assert again.exit_code == 2 and "--force" in again.output
    keys = {"public_key": public_key_b64(CMD), "document_key": public_key_b64(DOC)}
    bare = write_config(tmp_path / "bare.yaml", agent_config(tmp_path, **keys))
    warned = CliRunner().invoke(app, ["edge", "check-config", str(bare)])
    assert warned.exit_code == 0 and "no device.signing_key_file" in warned.output
    broken = tmp_path / "broken.pem"
    broken.write_text("not a key")
    bad = write_config(tmp_path / "bad.yaml", agent_config(tmp_path, signing_key_file=broken, **keys))
    refused = CliRunner().invoke(app, ["edge", "check-config", str(bad)])
    assert refused.exit_code == 2 and "device.signing_key_file" in refused.output and "keygen" in refused.output
    missing = write_config(
        tmp_path / "missing.yaml", agent_config(tmp_path, signing_key_file=tmp_path / "nope.pem", **keys)
    )
    gone = CliRunner().invoke(app, ["edge", "check-config", str(missing)])
    assert gone.exit_code == 2 and "device.signing_key_file" in gone.output and "ok:" not in gone.output
    public = tmp_path / "public.pem"
    public.write_text(made.stdout.strip())
    wrong = write_config(tmp_path / "wrong.yaml", agent_config(tmp_path, signing_key_file=public, **keys))
    assert "this is a public key" in CliRunner().invoke(app, ["edge", "check-config", str(wrong)]).output
    run = CliRunner().invoke(app, ["edge", "run", "--config", str(bad)])
    assert run.exit_code == 2 and "Traceback" not in run.output
    good = write_config(tmp_path / "good.yaml", agent_config(tmp_path, signing_key_file=key, **keys))
    shown = CliRunner().invoke(app, ["edge", "trust", "--config", str(good)])
    assert shown.exit_code == 0 and made.stdout.strip() in shown.output
