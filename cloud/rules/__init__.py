"""Rules: declarative YAML conditions over readings, events and silence, with alarm/command/webhook actions."""
