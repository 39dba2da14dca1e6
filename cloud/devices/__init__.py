"""Devices and their sites: registration, status and health, telemetry, commands, dead letters."""
