"""Basler cameras through pypylon: ``basler0`` (device index) or ``basler://SERIAL``.

Free-run grabs with LatestImageOnly (the newest frame, as a live view); triggered modes (``software``, or a
hardware line such as ``line1``) grab OneByOne, so every triggered part is judged. Incomplete grabs become
frames with ``error = "grab_incomplete"``; grab results are always released (a held result starves the pool).
A camera that disappears raises :class:`CameraLost`; :meth:`BaslerSource.reconnect` opens it again by serial
with the same settings. pylon's camera emulator (``PYLON_CAMEMU=N``) is a real pylon device and is what the
tests use; with ``emulator_images`` it streams a folder of images.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from edge.sources import CameraLost, Frame, Source, SourceError

log = logging.getLogger(__name__)

# Our pixel format → the camera's names for it (GigE/emulator, USB3 SFNC), then Bayer formats to convert from.
PIXEL_FORMATS = {
    "mono8": ["Mono8"],
    "rgb8": ["RGB8Packed", "RGB8", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"],
    "bgr8": ["BGR8Packed", "BGR8", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"],
}
TRIGGERS = ("free", "software", "line1", "line2", "line3", "line4")


@dataclass(frozen=True)
class CameraSettings:
    """What the station asks of the camera; every value is applied again after a reconnect."""

    width: int
    height: int
    pixel_format: str = "mono8"
    trigger: str = "free"
    exposure_us: float | None = None
    gain: float | None = None
    fps: float | None = None  # free-run frame rate, or the pace of software triggers
    offset_x: int = 0  # where the frame (the engine's size) sits on the sensor
    offset_y: int = 0
    emulator_images: str | None = None


def _pylon():
    try:
        from pypylon import genicam, pylon
    except ImportError as exc:
        raise SourceError("Basler cameras need pypylon: pip install pypylon") from exc
    return pylon, genicam


class BaslerSource(Source):
    finite = False
    live = True

    def __init__(self, uri: str, index: int | None, serial: str | None, settings: CameraSettings) -> None:
        if settings.trigger not in TRIGGERS:
            raise SourceError(f"trigger {settings.trigger!r}: use one of {', '.join(TRIGGERS)}")
        self.uri, self.index, self.serial, self.settings = uri, index, serial, settings
        self._camera = None
        self._converter = None
        self._next_trigger = 0.0

    @classmethod
    def from_uri(cls, uri: str, settings: CameraSettings) -> BaslerSource:
        if match := re.fullmatch(r"basler(\d+)", uri):
            return cls(uri, int(match.group(1)), None, settings)
        if uri.startswith("basler://") and len(uri) > len("basler://"):
            return cls(uri, None, uri[len("basler://") :], settings)
        raise SourceError(f"{uri!r}: name a Basler camera as basler0 (index) or basler://SERIAL")

    # -- opening ---------------------------------------------------------------------------------------------
    def _device(self):
        pylon, _ = _pylon()
        factory = pylon.TlFactory.GetInstance()
        devices = factory.EnumerateDevices()
        if self.serial is not None:
            chosen = [d for d in devices if d.GetSerialNumber() == self.serial]
        else:
            chosen = devices[self.index : self.index + 1] if self.index < len(devices) else []
        if not chosen:
            found = ", ".join(f"{d.GetModelName()} {d.GetSerialNumber()}" for d in devices) or "none"
            raise SourceError(f"{self.uri}: no such Basler camera (found: {found})")
        return factory.CreateDevice(chosen[0])

    def open(self) -> None:
        pylon, genicam = _pylon()
        try:
            self._camera = pylon.InstantCamera(self._device())
            self._camera.Open()
        except genicam.GenericException as exc:
            raise SourceError(f"{self.uri}: cannot open the camera: {str(exc).strip()}") from exc
        self.serial = self._camera.GetDeviceInfo().GetSerialNumber()
        self._configure()
        strategy = (
            pylon.GrabStrategy_LatestImageOnly if self.settings.trigger == "free" else pylon.GrabStrategy_OneByOne
        )
        self._camera.StartGrabbing(strategy)
        self._next_trigger = time.perf_counter()
        log.info(
            "%s: %s %s, %s, trigger %s",
            self.uri,
            self._camera.GetDeviceInfo().GetModelName(),
            self.serial,
            self._camera.PixelFormat.GetValue(),
            self.settings.trigger,
        )

    def _set(self, names: list[str], value) -> str:
        """Set the first of ``names`` the camera has; the camera's own message if it refuses."""
        _, genicam = _pylon()
        nodes = self._camera.GetNodeMap()
        for name in names:
            node = nodes.GetNode(name)
            if node is None or not genicam.IsWritable(node):
                continue
            try:
                if isinstance(value, str):
                    node.FromString(value)
                else:
                    node.SetValue(value)
            except genicam.GenericException as exc:
                raise SourceError(f"{self.uri}: the camera refused {name} = {value}: {str(exc).strip()}") from exc
            return name
        raise SourceError(f"{self.uri}: the camera has none of {', '.join(names)} to set to {value}")

    def _configure(self) -> None:
        pylon, _ = _pylon()
        s, camera = self.settings, self._camera
        symbolics = set(camera.PixelFormat.Symbolics)
        wanted = [f for f in PIXEL_FORMATS[s.pixel_format] if f in symbolics]
        if not wanted:
            raise SourceError(
                f"{self.uri}: the camera offers none of {PIXEL_FORMATS[s.pixel_format]} for {s.pixel_format}"
            )
        self._set(["PixelFormat"], wanted[0])
        self._converter = None
        if wanted[0].startswith("Bayer"):
            self._converter = pylon.ImageFormatConverter()
            self._converter.OutputPixelFormat = (
                pylon.PixelType_RGB8packed if s.pixel_format == "rgb8" else pylon.PixelType_BGR8packed
            )
        for name, value in (("Width", s.width), ("Height", s.height), ("OffsetX", s.offset_x), ("OffsetY", s.offset_y)):
            self._set([name], value)
        if s.emulator_images:
            self._set(["TestImageSelector"], "Off")
            self._set(["ImageFilename"], s.emulator_images)
            self._set(["ImageFileMode"], "On")
        if s.exposure_us is not None:
            self._set(["ExposureTime", "ExposureTimeAbs"], float(s.exposure_us))
        if s.gain is not None:
            self._set(["Gain", "GainRaw"], s.gain)
        self._set(["TriggerSelector"], "FrameStart")
        if s.trigger == "free":
            self._set(["TriggerMode"], "Off")
            if s.fps:
                self._set(["AcquisitionFrameRateEnable"], True) if camera.GetNodeMap().GetNode(
                    "AcquisitionFrameRateEnable"
                ) else None
                self._set(["AcquisitionFrameRate", "AcquisitionFrameRateAbs"], float(s.fps))
        else:
            self._set(["TriggerMode"], "On")
            self._set(["TriggerSource"], "Software" if s.trigger == "software" else s.trigger.capitalize())

    # -- grabbing --------------------------------------------------------------------------------------------
    def read(self, timeout: float = 1.0) -> Frame:
        pylon, genicam = _pylon()
        camera = self._camera
        if camera is None or not camera.IsOpen() or camera.IsCameraDeviceRemoved():
            raise CameraLost(f"{self.uri}: the camera is gone")
        try:
            if self.settings.trigger == "software":
                self._software_trigger(timeout)
            result = camera.RetrieveResult(int(timeout * 1000), pylon.TimeoutHandling_Return)
        except genicam.GenericException as exc:
            raise CameraLost(f"{self.uri}: {str(exc).strip()}") from exc
        if result is None or not result.IsValid():
            raise TimeoutError(f"{self.uri}: no frame within {timeout:.1f} s")
        wall, perf = time.time_ns(), time.perf_counter()
        try:
            frame_id = int(result.BlockID)
            t_capture = int(result.TimeStamp) or wall  # device ticks where the camera has them; the emulator: 0
            if not result.GrabSucceeded():
                detail = f"{result.ErrorDescription} (code {result.ErrorCode})"
                return Frame(frame_id, wall, wall, None, "grab_incomplete", detail, self.serial or "", perf)
            if self._converter is not None:
                pixels = self._converter.Convert(result).GetArray().copy()
            else:
                pixels = result.GetArray().copy()
            return Frame(
                frame_id,
                t_capture if t_capture != wall else wall,
                wall,
                pixels,
                name=self.serial or "",
                t_received=perf,
            )
        finally:
            result.Release()

    def _software_trigger(self, timeout: float) -> None:
        pylon, _ = _pylon()
        if self.settings.fps:
            self._next_trigger = max(self._next_trigger + 1.0 / self.settings.fps, time.perf_counter() - 1.0)
            time.sleep(max(0.0, self._next_trigger - time.perf_counter()))
        if self._camera.WaitForFrameTriggerReady(int(timeout * 1000), pylon.TimeoutHandling_Return):
            self._camera.ExecuteSoftwareTrigger()

    def close(self) -> None:
        if self._camera is not None:
            _, genicam = _pylon()
            try:
                self._camera.StopGrabbing()
                self._camera.Close()
                self._camera.DestroyDevice()
            except genicam.GenericException:
                pass  # already gone
            self._camera = None

    def reconnect(self) -> None:
        """Open the same camera (by serial) again with the same settings; SourceError while it is absent."""
        self.close()
        self.index = None if self.serial else self.index
        self.open()
