from __future__ import annotations

import pytest

from protocol import Channel, TopicError, parse, topic
from protocol.topics import shared, subscription


def test_build_and_parse_every_channel() -> None:
    for ch in Channel:
        name = "ping" if ch is Channel.CMD else None
        t = topic("riverside", "gate-01", ch, name)
        back = parse(t)
        assert (back.site, back.device, back.channel, back.name) == ("riverside", "gate-01", ch, name)
        assert str(back) == t


def test_retained_channels() -> None:
    assert parse("ce/v1/s/d/state").retained and parse("ce/v1/s/d/cfg").retained
    assert not parse("ce/v1/s/d/tele").retained


@pytest.mark.parametrize(
    "bad",
    [
        "ce/v1/site/dev",  # missing channel
        "ce/v2/site/dev/tele",  # wrong version
        "xx/v1/site/dev/tele",
        "ce/v1/site/dev/nope",  # unknown channel
        "ce/v1/site/dev/tele/extra",
        "ce/v1/site/dev/cmd",  # cmd without a name
        "ce/v1/site/dev/cmd/a/b",
        "ce/v1/+/dev/tele",  # wildcard
        "ce/v1/site/#",
        "ce/v1/Site/dev/tele",  # upper case
        "ce/v1/site/dev with space/tele",
        "ce/v1//dev/tele",
        "ce/v1/" + "a" * 65 + "/dev/tele",
        "ce/v1/site/dev/cmd/Bad",
    ],
)
def test_bad_topics_rejected(bad: str) -> None:
    with pytest.raises(TopicError) as exc:
        parse(bad)
    assert exc.value.reason.value == "bad_topic"


def test_builder_validates_ids() -> None:
    with pytest.raises(TopicError):
        topic("site", "dev/evil", "tele")
    with pytest.raises(TopicError):
        topic("site", "dev", "tele", "ping")


def test_subscriptions() -> None:
    assert subscription() == "ce/v1/+/+/+"
    assert subscription("riverside", "+", "cmd/+") == "ce/v1/riverside/+/cmd/+"
    assert shared("ingest", subscription()) == "$share/ingest/ce/v1/+/+/+"
    with pytest.raises(TopicError):
        subscription("bad site")
