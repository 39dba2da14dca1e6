"""Gate unit settings (cheap to import: the agent parses them before the unit loads its models)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.drivers.config import CameraConfig, IOConfig, V4L2CameraConfig, camera_kind
from edge.thermal.config import MLX90640Config
from edge.vision.config import VisionConfig


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["gate"]
    door: str = "door-1"
    io: IOConfig
    language: Literal["en", "zh-CN"] = Field("en", description="language of the screen prompts")
    lock: str = Field("lock", description="output that releases the lock (energised = open)")
    door_contact: str | None = Field("door_contact", description="input: active = door open")
    fire: str | None = Field("fire", description="input: active = fire alarm (all doors open)")
    exit_button: str | None = None
    open_s: float = Field(5.0, gt=0, le=60)
    held_open_s: float = Field(20.0, gt=0, le=600, description="open this long past the pulse → alarm")
    anti_passback_s: float | None = Field(None, gt=0, description="same face again within this → refused")
    cooldown_s: float = Field(3.0, ge=0, description="no new decision for the same person within this")
    camera: CameraConfig = Field(
        V4L2CameraConfig(type="v4l2"), description="v4l2 (default /dev/video0), rtsp or picamera"
    )
    thermal_camera: MLX90640Config | None = Field(None, description="the thermal array beside the camera")
    vision: VisionConfig = VisionConfig()
    gallery: Path = Path("var/gallery.db")
    secret: str = Field(description="device secret for the encrypted gallery; use ${CE_DEVICE_SECRET}")
    visitor_entry_s: float = Field(30.0, gt=0, description="time to type a flat number after the prompt")
    visitor_answer_s: float = Field(60.0, gt=0, le=600, description="time the resident has to answer")
    snapshot_max_bytes: int = Field(60_000, ge=5_000, le=150_000)
    sync_check_s: float = Field(300.0, ge=1, le=86_400, description="report the gallery revision this often")

    @model_validator(mode="after")
    def _thermal_needs_a_thermal_camera(self) -> GateConfig:
        screening = self.vision.thermal
        if screening is not None and self.thermal_camera is None and not camera_kind(self.camera.type).thermal:
            raise ValueError(
                "vision.thermal screens temperatures but this gate has no thermal camera: add "
                "thermal_camera: {type: mlx90640}, or set vision.thermal: null for a door without one"
            )
        if self.thermal_camera is not None:
            if screening is None:
                raise ValueError("thermal_camera is set but vision.thermal is null: give vision.thermal settings")
            if self.thermal_camera.refresh_hz < 4:
                raise ValueError(
                    "thermal_camera.refresh_hz must be 4 Hz or more at a door: a slower array's frames are too old "
                    "to screen the face in front of the camera (8 Hz needs the I²C bus at 400 kHz)"
                )
            reg = screening.registration
            if (reg.thermal_width, reg.thermal_height) != (32, 24):
                raise ValueError(
                    "an MLX90640 is 32×24: set vision.thermal.registration.thermal_width: 32, thermal_height: 24 "
                    "and thermal_hfov_deg to the lens (55 or 110), and blackbody_c: null unless a reference is fitted"
                )
            if "blackbody_c" not in screening.model_fields_set:
                raise ValueError(
                    "vision.thermal.blackbody_c: say whether a blackbody reference is in the MLX90640's view — "
                    "blackbody_c: null when none is (the default 38.0 would read background pixels as one)"
                )
        return self
