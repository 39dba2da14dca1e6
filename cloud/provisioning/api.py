"""Device identities: claim tokens for technicians, the one-time provisioning call for new devices,
revocation and credential rotation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from cloud.api.deps import CurrentUser, DeviceId, DevicePublicKey, Service, SiteId, allow, run
from cloud.api.models import (
    Claim,
    CredentialsRotating,
    DeviceReinstated,
    DeviceRevoked,
    Provisioned,
    SigningKeySet,
)
from cloud.provisioning import actions as provisioning_actions
from cloud.provisioning.service import ClaimError

router = APIRouter(tags=["provisioning"])


class ClaimIn(BaseModel):
    ttl_s: float = Field(default=3600, ge=60, le=7 * 86_400, description="how long the token can be used")
    kind: str | None = Field(default=None, max_length=32, description="only this kind of device (gateway, …)")
    note: str = Field(default="", max_length=200)


@router.post(
    "/api/sites/{site_id}/claims", status_code=201, response_model=Claim, dependencies=[allow("devices.provision")]
)
def new_claim(site_id: SiteId, body: ClaimIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """A single-use claim token for one new device at the site (shown once; only its hash is kept)."""
    return run(provisioning_actions.new_claim, svc, user, site_id, body.ttl_s, body.kind, body.note)  # type: ignore[no-any-return]


class ProvisionIn(BaseModel):
    claim: str = Field(min_length=8, max_length=100)
    kind: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    device_id: str | None = Field(default=None, max_length=64, description="keep this id (a replaced board)")
    name: str = Field(default="", max_length=200)
    signing_key: DevicePublicKey | None = Field(
        default=None,
        description="the public half of the key the device made for itself (Ed25519, base64): from then on the "
        "cloud takes only messages signed by it (readings aside)",
    )


@router.post("/provision", response_model=Provisioned)
def provision(body: ProvisionIn, request: Request, svc: Service) -> dict[str, Any]:
    """Called once by a new device (or tools/flash.py for it) with a claim token: answers with its identity
    (device id, broker credentials, CA, command key, initial config). Failed attempts are rate limited per
    address."""
    keys = [f"claim-ip:{request.client.host if request.client else '?'}"]
    wait = svc.auth.limited(keys)
    if wait:
        raise HTTPException(
            429, detail=f"too many failed claims: try again in {wait} s", headers={"Retry-After": str(wait)}
        )
    try:
        out = svc.provisioning.provision(body.claim, body.kind, body.device_id, body.name, body.signing_key)
    except ClaimError as exc:
        svc.auth.failed(keys)
        svc.auth.audit("provision", "claim.refused", body.device_id or body.kind, {"reason": str(exc)})
        raise HTTPException(403, detail=str(exc)) from None
    except ConnectionError as exc:
        raise HTTPException(503, detail=f"{exc}; the claim was not used, try again") from None
    key = body.signing_key[:12] if body.signing_key else None
    svc.auth.audit("provision", "device.provisioned", out["device_id"], {"site": out["site_id"], "signing_key": key})
    return out


@router.post("/api/devices/{device_id}/revoke", response_model=DeviceRevoked, dependencies=[allow("devices.provision")])
def revoke(device_id: DeviceId, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Lock the device out: disabled at the broker (its connection drops) and refused by ingestion."""
    return run(provisioning_actions.revoke_device, svc, user, device_id)  # type: ignore[no-any-return]


class SigningKeyIn(BaseModel):
    signing_key: DevicePublicKey | None = Field(
        description="the device's own public key (civicedge edge keygen prints it); null forgets it"
    )


@router.put(
    "/api/devices/{device_id}/signing-key", response_model=SigningKeySet, dependencies=[allow("devices.provision")]
)
def set_signing_key(device_id: DeviceId, body: SigningKeyIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Register the public half of a gateway's own key (a gateway registered by hand rather than claimed): from
    then on the cloud takes only what it signs (readings aside), and takes faces it enrols."""
    return run(provisioning_actions.set_signing_key, svc, user, device_id, body.signing_key)  # type: ignore[no-any-return]


@router.post(
    "/api/devices/{device_id}/reinstate", response_model=DeviceReinstated, dependencies=[allow("devices.reinstate")]
)
def reinstate(device_id: DeviceId, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Undo a revocation (admins only, audited): the device may then be claimed again for new credentials."""
    return run(provisioning_actions.reinstate_device, svc, user, device_id)  # type: ignore[no-any-return]


@router.post(
    "/api/devices/{device_id}/rotate-credentials",
    status_code=202,
    response_model=CredentialsRotating,
    dependencies=[allow("devices.provision")],
)
def rotate(device_id: DeviceId, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Send the device a new broker password; the broker switches once the device acknowledges."""
    return run(provisioning_actions.rotate_credentials, svc, user, device_id)  # type: ignore[no-any-return]
