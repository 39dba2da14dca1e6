"""Asset kinds and manhole-cover subtypes, as the pilot districts registered them."""

from __future__ import annotations

from typing import Final

ASSET_KINDS: Final = (
    "manhole_cover",
    "gate",
    "barrier",
    "parking_lift",
    "elevator",
    "water_meter",
    "gas_detector",
    "perimeter_zone",
    "camera",
    "gateway",
    "other",
)

#: Manhole-cover subtypes: what runs under the cover decides which department owns a fault.
COVER_SUBTYPES: Final = (
    "sewage",
    "storm_water",
    "combined_sewer",
    "power",
    "telecom",
    "network_fibre",
    "cable_tv",
    "gas",
    "heating",
    "district_cooling",
    "water_supply",
    "reclaimed_water",
    "street_lighting",
    "traffic_signal",
    "public_security_video",
    "fire_hydrant",
    "military_confidential",
    "industrial_pipeline",
    "petroleum",
    "environmental_monitoring",
    "unknown",
)
