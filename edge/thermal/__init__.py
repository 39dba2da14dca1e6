"""Thermal screening at the gate: frames, RGB→thermal registration, calibrated body-temperature estimate."""
