"""Which assets are confidential: those of a subtype marked so in the registry (``confidential_subtypes``).
SQL expressions over the registry, for the access rules (``cloud.auth.scope``), live labelling and reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, select

from cloud.registry.tables import assets, confidential_subtypes


def is_confidential() -> ColumnElement[bool]:
    """True for an ``assets`` row of a confidential subtype."""
    return assets.c.subtype.in_(select(confidential_subtypes.c.subtype))


def confidential_assets() -> Any:
    """Ids of the assets of a confidential subtype (a subquery)."""
    return select(assets.c.id).where(is_confidential())


def confidential_devices() -> Any:
    """Devices fitted to assets of a confidential subtype (a subquery, without NULLs so NOT IN works)."""
    return select(assets.c.device_id).where(is_confidential(), assets.c.device_id.is_not(None))
