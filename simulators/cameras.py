"""The simulators' cameras, plugged into the gateway's camera registry through the ``civicedge.cameras`` entry
points (``pyproject.toml``) — the same way a third-party camera would be. Settings only here (cheap to import
while a config is parsed); the renderers load when a unit opens its camera.

* ``simulated`` — a gate terminal's view: arrivals of real face photos (live people who move their heads,
  prints and phone screens held up), with a matching thermal array (``simulators.gate_scene``);
* ``facade_sim`` — a building face with objects falling from windows (``simulators.facade``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.drivers.config import CameraKind, CameraSettings


class SimulatedCameraConfig(CameraSettings):
    type: Literal["simulated"]
    fps: float = Field(10.0, gt=0, le=60)
    seed: int = 0


class FacadeSimConfig(CameraSettings):
    """The rendered facade: clips with objects falling and distractors."""

    type: Literal["facade_sim"]
    seed: int = 0
    fps: float = Field(15.0, gt=0, le=60)
    clip_s: float = Field(30.0, gt=1)
    falls: int = Field(0, ge=0, le=10, description="objects dropped in each clip")


SIMULATED = CameraKind(SimulatedCameraConfig, "simulators.gate_scene:open_scene", thermal=True)
FACADE = CameraKind(FacadeSimConfig, "simulators.facade:open_facade")
