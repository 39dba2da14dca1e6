"""Street and community sensors: manhole-cover nodes (tilt, water, gas), their readings and alarms."""
