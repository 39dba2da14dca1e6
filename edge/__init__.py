"""The gateway agent: SQLite outbox, MQTT uplink, signed commands, health, and the site units."""

from civicedge import __version__

__all__ = ["__version__"]
