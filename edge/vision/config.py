"""Gate vision settings (pydantic only: parsed with the agent's config before any model loads)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from edge.thermal.config import ThermalConfig


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min_face_px: float = Field(60, description="face box width in image pixels")
    max_yaw: float = Field(0.22, description="nose offset from the eye midpoint, in eye distances (≈ 25°)")
    pitch_range: tuple[float, float] = (0.3, 0.7)  # nose between eye line (0) and mouth (1)
    max_roll_deg: float = 40.0
    min_brightness: float = 40.0
    max_brightness: float = 225.0
    min_sharpness: float = 0.12


class LivenessConfig(BaseModel):
    """Which liveness cues decide (docs/vision.md says what each catches and misses). ``liveness: off`` turns
    them all off: a photo of a resident then opens the door, and the gate raises a warning alarm saying so."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    colour: bool = Field(True, description="refuse a face without colour (a greyscale print or display)")
    motion: bool | None = Field(
        None, description="refuse a face that moves as a flat picture does; None: on when there is no thermal camera"
    )
    min_parallax: float = Field(
        0.015, gt=0, le=0.2, description="motion: depth parallax (eye distances) that shows a face is not flat"
    )
    ask_after_s: float = Field(1.5, gt=0, le=10, description="motion: no depth seen by then → 'turn your head'")
    spoof_after_s: float = Field(
        4.0, gt=0, le=30, description="motion: a face that moved and stayed flat this long → presentation attack"
    )


def _liveness(value: Any) -> Any:
    if isinstance(value, bool):  # `liveness: off` (YAML reads off as false) / `liveness: on`
        return LivenessConfig(enabled=value)
    if value in ("off", "on"):
        return LivenessConfig(enabled=value == "on")
    if isinstance(value, str):
        raise ValueError(f"liveness is on, off, or a mapping of cues (enabled, colour, motion, …), not {value!r}")
    return value


class VisionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: Literal["short", "full"] = "short"
    threads: int = 2  # SFace: 2 threads take ~40 % off its time on a 2-core box
    detector_threads: int = 1  # BlazeFace is small: one thread, no pool to wake between frames
    delegate: Literal["cpu", "xnnpack", "edgetpu", "gpu"] = Field(
        "xnnpack", description="where the face models run (edge/inference.py)"
    )
    delegate_library: str | None = Field(
        None, pattern=r"^/", description="absolute path of the delegate library, if not the usual name"
    )
    quality: QualityConfig = QualityConfig()
    thermal: ThermalConfig | None = ThermalConfig()  # None: no thermal camera at this door
    liveness: Annotated[LivenessConfig, BeforeValidator(_liveness)] = LivenessConfig()

    @property
    def motion_liveness(self) -> bool:
        lv = self.liveness
        return lv.enabled and (lv.motion if lv.motion is not None else self.thermal is None)

    @model_validator(mode="after")
    def _a_photo_must_not_open_the_door(self) -> VisionConfig:
        lv = self.liveness
        if lv.enabled and self.thermal is None and not self.motion_liveness:
            raise ValueError(
                "face unlock without a thermal camera needs the motion liveness cue (a colour print passes the "
                "colour cue): remove liveness.motion: false, or set liveness: off to accept that a photo of a "
                "resident opens the door"
            )
        return self
