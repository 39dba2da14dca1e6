"""The gateway agent: SQLite outbox, MQTT uplink, signed commands, health, and the site units."""

__version__ = "0.1.0"
