"""Hardware drivers behind small interfaces; the config's ``type`` picks the implementation."""
