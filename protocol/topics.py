"""The MQTT topic scheme, built and parsed only here.

``ce/v1/{site}/{device}/{channel}`` where channel is one of ``tele``, ``evt``, ``alm``, ``state``,
``ack``, ``cfg``, ``gallery`` or ``cmd/{name}`` (cloud to device).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from protocol.errors import TopicError
from protocol.limits import MAX_ID_LEN, MAX_NAME_LEN

PREFIX: Final = "ce/v1"
_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_.-]*$")


class Channel(StrEnum):
    TELE = "tele"
    EVT = "evt"
    ALM = "alm"
    STATE = "state"
    ACK = "ack"
    CMD = "cmd"
    CFG = "cfg"
    GALLERY = "gallery"


#: Channels a device publishes on (uplink); the rest are cloud to device.
UPLINK: Final = frozenset({Channel.TELE, Channel.EVT, Channel.ALM, Channel.STATE, Channel.ACK})
#: Channels whose messages are published retained.
RETAINED: Final = frozenset({Channel.STATE, Channel.CFG})
QOS: Final = {
    Channel.TELE: 1,
    Channel.EVT: 1,
    Channel.ALM: 1,
    Channel.STATE: 1,
    Channel.ACK: 1,
    Channel.CMD: 1,
    Channel.CFG: 1,
    Channel.GALLERY: 1,
}


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid site or device id, else raise :class:`TopicError`."""
    if not isinstance(value, str) or not value:
        raise TopicError(f"{what} is empty")
    if len(value) > MAX_ID_LEN:
        raise TopicError(f"{what} {value[:20]!r}… is longer than {MAX_ID_LEN} characters")
    if not _ID_RE.match(value):
        raise TopicError(f"{what} {value!r} may contain only a-z, 0-9, '_', '.', '-' and must start alnum")
    return value


def validate_name(value: str) -> str:
    if not value or len(value) > MAX_NAME_LEN or not _NAME_RE.match(value):
        raise TopicError(f"command name {value!r} must match {_NAME_RE.pattern} (≤ {MAX_NAME_LEN} chars)")
    return value


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    device: str
    channel: Channel
    name: str | None = None  # command name, only for Channel.CMD

    def __post_init__(self) -> None:
        validate_id(self.site, "site")
        validate_id(self.device, "device")
        if (self.channel is Channel.CMD) != (self.name is not None):
            raise TopicError("a command name goes with the cmd channel and only with it")
        if self.name is not None:
            validate_name(self.name)

    def __str__(self) -> str:
        base = f"{PREFIX}/{self.site}/{self.device}/{self.channel.value}"
        return f"{base}/{self.name}" if self.name else base

    @property
    def retained(self) -> bool:
        return self.channel in RETAINED

    @property
    def qos(self) -> int:
        return QOS[self.channel]


def topic(site: str, device: str, channel: Channel | str, name: str | None = None) -> str:
    """Build a topic string (validated)."""
    return str(Topic(site, device, Channel(channel), name))


def parse(value: str) -> Topic:
    """Parse a topic string; raise :class:`TopicError` with the reason when it is not ours."""
    if not isinstance(value, str):
        raise TopicError("topic is not a string")
    return _parse(value)


#: a topic is parsed once (the district's devices repeat theirs thousands of times an hour; what is refused is
#: parsed again each time, as an error is not kept)
@functools.lru_cache(maxsize=1 << 16)
def _parse(value: str) -> Topic:
    if any(c in value for c in "+#\x00"):
        raise TopicError(f"topic {value!r} contains a wildcard or NUL")
    parts = value.split("/")
    if len(parts) < 5 or parts[0] != "ce" or parts[1] != "v1":
        raise TopicError(f"topic {value!r} is not ce/v1/{{site}}/{{device}}/{{channel}}")
    site, device, chan = parts[2], parts[3], parts[4]
    try:
        channel = Channel(chan)
    except ValueError:
        raise TopicError(f"unknown channel {chan!r}") from None
    if channel is Channel.CMD:
        if len(parts) != 6:
            raise TopicError("cmd topic needs exactly one command name: ce/v1/{site}/{device}/cmd/{name}")
        return Topic(site, device, channel, parts[5])
    if len(parts) != 5:
        raise TopicError(f"topic {value!r} has extra levels")
    return Topic(site, device, channel)


def subscription(site: str = "+", device: str = "+", channel: str = "+") -> str:
    """A subscription filter over the scheme (wildcards allowed here, and only here)."""
    for part, what in ((site, "site"), (device, "device")):
        if part != "+":
            validate_id(part, what)
    return f"{PREFIX}/{site}/{device}/{channel}"


def shared(group: str, filter_: str) -> str:
    """An MQTT 5 / Mosquitto shared subscription, so N workers split one stream."""
    validate_id(group, "share group")
    return f"$share/{group}/{filter_}"
