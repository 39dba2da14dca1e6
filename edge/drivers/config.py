"""Driver settings (pydantic only, cheap to import: the agent parses them before any driver loads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, model_validator


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    outputs: dict[str, int] = Field(default_factory=dict, description="name → pin / channel / coil")
    inputs: dict[str, int] = Field(default_factory=dict, description="name → pin / channel / discrete input")
    invert: list[str] = Field(default_factory=list, description="inputs that are active when the line is low")


class GpioConfig(_Cfg):
    type: Literal["gpio"]
    pull_up: bool = True


class IOBoardConfig(_Cfg):
    type: Literal["ioboard"]
    port: str
    baud: int = 115200
    timeout_s: float = Field(0.5, gt=0, le=10)
    watchdog_s: float | None = Field(5.0, gt=0, le=60, description="board drops outputs if not kicked")


class ModbusRtu(BaseModel):
    """How to reach a Modbus RTU device (a serial port or RS-485 adapter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["rtu"]
    port: str
    baud: int = 115200


class ModbusTcp(BaseModel):
    """How to reach a Modbus TCP device (or an RTU-over-TCP gateway)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["tcp"]
    host: str
    port: int = Field(502, ge=1, le=65535)


class ModbusConfig(_Cfg):
    type: Literal["modbus"]
    port: str
    baud: int = 9600
    unit_id: int = Field(1, ge=1, le=247)
    timeout_s: float = Field(0.5, gt=0, le=10)


IOConfig = Annotated[GpioConfig | IOBoardConfig | ModbusConfig, Field(discriminator="type")]


# --- cameras -------------------------------------------------------------------------------------------------


class CameraSettings(BaseModel):
    """What every camera source's settings share; ``type`` picks the source from the camera registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class V4L2CameraConfig(CameraSettings):
    """A USB camera, or a CSI camera the kernel exposes as ``/dev/videoN`` (Jetson), read through OpenCV."""

    type: Literal["v4l2"]
    device: int | str = Field(0, description="index N of /dev/videoN, or the device path (/dev/v4l/by-id/… is stable)")
    width: int = Field(640, ge=160, le=4096)
    height: int = Field(480, ge=120, le=3072)
    fps: float | None = Field(None, gt=0, le=120, description="ask the camera for this rate (None: its default)")
    fourcc: str | None = Field(None, pattern=r"^[A-Z0-9]{4}$", description="pixel format, e.g. MJPG for USB 2")


class RtspCameraConfig(CameraSettings):
    """An IP camera's stream (RTSP, or any URL OpenCV's FFmpeg reads), decoded on the gateway."""

    type: Literal["rtsp"]
    url: str = Field(pattern=r"^(rtsps?|https?)://", description="rtsp://host:554/stream (credentials below)")
    user: str | None = Field(None, description="the camera account (any characters; encoded into the URL)")
    password: str | None = Field(None, description="its password; use ${CE_CAMERA_PASSWORD}")

    @model_validator(mode="after")
    def _password_needs_a_user(self) -> RtspCameraConfig:
        if self.password is not None and self.user is None:
            raise ValueError("a camera password needs its user: add user: to the camera settings")
        return self

    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP over the RTSP connection (tcp) or UDP")
    timeout_s: float = Field(5.0, gt=0, le=60, description="no frame for this long: reconnect")


class PiCameraConfig(CameraSettings):
    """The Raspberry Pi camera module (CSI) through picamera2 and libcamera (the ``pi`` extra)."""

    type: Literal["picamera"]
    camera: int = Field(0, ge=0, le=3, description="which camera module (a Pi 5 has two connectors)")
    width: int = Field(640, ge=160, le=4608)
    height: int = Field(480, ge=120, le=2592)
    fps: float = Field(15.0, gt=0, le=120)


@dataclass(frozen=True, slots=True)
class CameraKind:
    """One kind of camera source: its settings model and where its opener lives (``"module:function"``, taking
    the settings and returning a frame source; imported only when a unit opens the camera)."""

    settings: type[CameraSettings]
    opener: str
    thermal: bool = False  # its frames carry thermal frames of their own (a simulated terminal does)


CAMERA_PLUGINS = "civicedge.cameras"  # entry-point group: name = camera type, value = a CameraKind
_CAMERAS: dict[str, CameraKind] = {
    "v4l2": CameraKind(V4L2CameraConfig, "edge.drivers.camera:open_v4l2"),
    "rtsp": CameraKind(RtspCameraConfig, "edge.drivers.camera:open_rtsp"),
    "picamera": CameraKind(PiCameraConfig, "edge.drivers.picamera:open_picamera"),
}
_plugins_loaded = False
_BROKEN: dict[str, str] = {}  # plug-ins that could not be loaded, and why


def register_camera(name: str, kind: CameraKind) -> None:
    """Add a camera source (a plug-in, or the simulators' rendered cameras) to the registry."""
    if not issubclass(kind.settings, CameraSettings):
        raise TypeError(f"camera {name!r}: its settings must derive from CameraSettings")
    _CAMERAS[name] = kind


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=CAMERA_PLUGINS):
        if ep.name in _CAMERAS:
            continue
        where = f"camera plug-in {ep.name!r} ({ep.value}, from {ep.dist.name if ep.dist else 'an unknown package'})"
        try:
            kind = ep.load()
        except Exception as exc:  # one broken plug-in must not hide the others, nor turn into a traceback
            _BROKEN[ep.name] = f"{where} cannot be loaded: {type(exc).__name__}: {exc}"
            continue
        if isinstance(kind, CameraKind) and issubclass(kind.settings, CameraSettings):
            register_camera(ep.name, kind)
        else:
            _BROKEN[ep.name] = f"{where} is not a CameraKind"


def camera_kind(name: str) -> CameraKind:
    if name not in _CAMERAS:
        _load_plugins()
    if name in _BROKEN:
        raise ValueError(_BROKEN[name])
    if name == "opencv":
        raise ValueError("camera type opencv is now v4l2 (a device) or rtsp (a stream URL, with user and password)")
    if name not in _CAMERAS:
        raise ValueError(
            f"unknown camera type {name!r}; known: {', '.join(sorted(_CAMERAS))} "
            f"(other sources plug in through the {CAMERA_PLUGINS!r} entry-point group)"
        )
    return _CAMERAS[name]


def _camera(value: Any) -> CameraSettings:
    if isinstance(value, CameraSettings):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ValueError("a camera is a mapping with a type, e.g. {type: v4l2, device: 0}")
    return camera_kind(value["type"]).settings.model_validate(value)


CameraConfig = Annotated[SerializeAsAny[CameraSettings], BeforeValidator(_camera)]


class SerialAnprConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["serial"]
    port: str
    baud: int = 9600


class TcpAnprConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)


AnprConfig = Annotated[SerialAnprConfig | TcpAnprConfig, Field(discriminator="type")]
