"""The cloud service: ingestion workers, storage, REST API, commands, time-series export."""
