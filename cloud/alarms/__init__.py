"""Alarms: one lifecycle for every source (devices, rules, operators), the device alarm channel, the API and
the console pages."""
