"""Hard limits of the wire contract. Firmware gets the same numbers through the JSON Schemas."""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_READINGS_PER_BATCH: Final = 1000
MAX_ID_LEN: Final = 64
MAX_NAME_LEN: Final = 64
MAX_TEXT_LEN: Final = 1024
MAX_ARGS_BYTES: Final = 16 * 1024
MAX_GALLERY_ENTRIES: Final = 500
EMBEDDING_DIM: Final = 128
#: Commands further in the future than this are refused too (a stolen key cannot mint long-lived ones).
MAX_COMMAND_TTL_MS: Final = 24 * 3600 * 1000
