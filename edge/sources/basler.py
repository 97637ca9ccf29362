"""Basler cameras through pypylon: ``basler0`` (device index) or ``basler://SERIAL``.

Free-run grabs with LatestImageOnly (the newest frame, as a live view); triggered modes (``software``, or a
hardware line such as ``line1``) grab OneByOne, so every triggered part is judged. Incomplete grabs become
frames with ``error = "grab_incomplete"``; grab results are always released (a held result starves the pool).
On triggered lines a part can also go without any frame: the camera ignores a trigger that comes while it is
busy (it reports a FrameStartOvertrigger event, where it has one), and a frame lost on the way shows as a jump
in the camera's frame counter (BlockID). Both come out as frames without pixels (``trigger_overrun``,
``frame_lost``), so each such part gets its ``error`` verdict.
A camera that disappears raises :class:`CameraLost`; :meth:`BaslerSource.reconnect` opens it again by serial
with the same settings. pylon's camera emulator (``PYLON_CAMEMU=N``) is a real pylon device and is what the
tests use; with ``emulator_images`` it streams a folder of images.

Times of a frame: ``t_receive_ns`` is the host clock when pylon handed the frame over; ``t_capture_ns`` is the host
clock at capture as near as the host knows it: with the software trigger, when the host sent the trigger that made
the frame (the last one sent before the frame arrived), otherwise the receive time; ``camera_timestamp`` is the
camera's own clock (pylon's ``TimeStamp``, device ticks: ns on USB3 cameras, GevTimestampTickFrequency on GigE),
0 where the camera has none (the emulator).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from collections import deque
from dataclasses import dataclass

from edge.sources.base import CameraLost, Frame, Source, SourceError, SourceKind, register_source
from edge.sources.pacing import Pacer

log = logging.getLogger(__name__)

# Our pixel format → the camera's names for it (GigE/emulator, USB3 SFNC), then Bayer formats to convert from.
PIXEL_FORMATS = {
    "mono8": ["Mono8"],
    "rgb8": ["RGB8Packed", "RGB8", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"],
    "bgr8": ["BGR8Packed", "BGR8", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"],
}
TRIGGERS = ("free", "software", "line1", "line2", "line3", "line4")
# The node an over-trigger event updates: SFNC 2 (USB, ace 2), SFNC 1 (GigE).
OVERTRIGGER_NODES = ("EventFrameStartOvertriggerTimestamp", "FrameStartOvertriggerEventTimestamp")
NO_FRAME = -1  # frame_id of a part the camera never made a frame of (an ignored trigger)
MAX_COUNTED_GAP = 1000  # a larger BlockID jump is a counter reset or wrap, not lost frames


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


@functools.cache
def _pylon():
    """pypylon's ``pylon`` and ``genicam`` modules, imported once (not once per grab)."""
    try:
        from pypylon import genicam, pylon
    except ImportError as exc:
        raise SourceError("Basler cameras need pypylon: pip install 'edge-inspect[basler]'") from exc
    return pylon, genicam


class BaslerSource(Source):
    finite = False
    live = True

    def __init__(self, uri: str, index: int | None, serial: str | None, settings: CameraSettings) -> None:
        if settings.trigger not in TRIGGERS:
            raise SourceError(f"trigger {settings.trigger!r}: use one of {', '.join(TRIGGERS)}")
        _pylon()  # no pypylon is a set-up error, found before the station starts (not a camera to wait for)
        self.uri, self.index, self.serial, self.settings = uri, index, serial, settings
        self._camera = None
        self._converter = None
        self._pacer = Pacer(settings.fps or 0.0)
        self._trigger_ns = 0  # host clock when the last software trigger was sent: the capture time of its frame
        self._events: deque[Frame] = deque()  # ignored triggers, appended by pylon's event thread
        self._ready: deque[Frame] = deque()  # frames (and parts without one) in part order, to hand out
        self._last_block_id: int | None = None
        self._overtrigger_handler = None  # pylon calls it from its event thread; keep the reference
        self.overtriggers_counted = False  # whether this camera reports the triggers it ignores

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
            if self.settings.trigger != "free":
                self._camera.GrabCameraEvents.Value = True  # pylon needs this before Open to deliver events
            self._camera.Open()
        except genicam.GenericException as exc:
            raise SourceError(f"{self.uri}: cannot open the camera: {str(exc).strip()}") from exc
        self.serial = self._camera.GetDeviceInfo().GetSerialNumber()
        self._configure()
        self._last_block_id = None  # a reopened camera counts from 0 again
        self._trigger_ns = 0
        if self.settings.trigger != "free":
            self._watch_overtriggers()
        strategy = (
            pylon.GrabStrategy_LatestImageOnly if self.settings.trigger == "free" else pylon.GrabStrategy_OneByOne
        )
        self._camera.StartGrabbing(strategy)
        self._pacer.restart()
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

    overtrigger_event = "FrameStartOvertrigger"  # the camera event that reports an ignored trigger
    overtrigger_nodes = OVERTRIGGER_NODES  # the event's timestamp node, by SFNC version

    def _watch_overtriggers(self) -> None:
        """Count the triggers the camera ignores while busy (its FrameStartOvertrigger event), where it can."""
        pylon, genicam = _pylon()
        camera, nodes = self._camera, self._camera.GetNodeMap()
        node = next((name for name in self.overtrigger_nodes if nodes.GetNode(name) is not None), None)
        try:
            offered = (
                nodes.GetNode("EventSelector") is not None and self.overtrigger_event in camera.EventSelector.Symbolics
            )
            if offered and node is not None:
                self._set(["EventSelector"], self.overtrigger_event)
                try:
                    self._set(["EventNotification"], "On")
                except SourceError:
                    self._set(["EventNotification"], "GenICamEvent")  # older GigE models (scout, aviator)
                self._overtrigger_handler = _overtrigger_handler(self)
                camera.RegisterCameraEventHandler(
                    self._overtrigger_handler, node, 0, pylon.RegistrationMode_ReplaceAll, pylon.Cleanup_None
                )
                self.overtriggers_counted = True
                return
            reason = f"no {self.overtrigger_event} event"
        except (genicam.GenericException, SourceError) as exc:
            reason = f"its {self.overtrigger_event} event cannot be enabled: {str(exc).strip()}"
        self.overtriggers_counted = False
        log.warning(
            "%s cannot report frame-trigger overruns (%s): a part triggered while the camera is busy gets no "
            "frame, and this station cannot see it; keep the trigger rate below the camera's frame rate",
            self.uri,
            reason,
        )

    def overtrigger(self, camera_timestamp: int = 0) -> None:
        """The camera ignored a frame trigger: that part gets a frame without pixels. Called on pylon's event
        thread (deque appends are thread-safe); handed out in part order by the camera's clock."""
        wall = time.time_ns()
        detail = "the camera ignored a frame trigger while busy"
        self._events.append(
            Frame(
                NO_FRAME,
                wall,
                wall,
                None,
                "trigger_overrun",
                detail,
                self.serial or "",
                time.perf_counter(),
                camera_timestamp,
            )
        )

    def _in_part_order(self, frame: Frame | None) -> None:
        """Queue ``frame`` (None: none came in time) behind what came before it: frames the camera's counter skipped
        (triggered lines) and triggers it ignored before this frame's exposure."""
        if frame is not None and self.settings.trigger != "free":
            previous = self._last_block_id
            lost = frame.frame_id - previous - 1 if previous is not None else 0
            plausible = 0 <= lost <= MAX_COUNTED_GAP
            if frame.pixels is not None or plausible:  # a failed grab's id may be garbage: then it is not used
                self._last_block_id = frame.frame_id
            if plausible and lost:
                detail = "the camera's frame counter skipped it: lost between camera and host"
                for block_id in range(previous + 1, frame.frame_id):
                    self._ready.append(
                        Frame(
                            block_id,
                            frame.t_receive_ns,
                            frame.t_receive_ns,
                            None,
                            "frame_lost",
                            detail,
                            self.serial or "",
                            frame.t_received,
                        )
                    )
            elif not plausible and frame.pixels is not None:
                log.info("%s: frame counter went from %d to %d (reset or wrap)", self.uri, previous, frame.frame_id)
        # An ignored trigger goes before the frame exposed after it; without both clocks, before the frame.
        while self._events and (
            frame is None
            or not (self._events[0].camera_timestamp and frame.camera_timestamp)
            or self._events[0].camera_timestamp < frame.camera_timestamp
        ):
            self._ready.append(self._events.popleft())
        if frame is not None:
            self._ready.append(frame)

    # -- grabbing --------------------------------------------------------------------------------------------
    def read(self, timeout: float = 1.0) -> Frame:
        pylon, genicam = _pylon()
        camera = self._camera
        if self._ready:
            return self._ready.popleft()
        if camera is None or not camera.IsOpen() or camera.IsCameraDeviceRemoved():
            raise CameraLost(f"{self.uri}: the camera is gone")
        try:
            if self.settings.trigger == "software":
                self._software_trigger(timeout)
            result = camera.RetrieveResult(int(timeout * 1000), pylon.TimeoutHandling_Return)
        except genicam.GenericException as exc:
            raise CameraLost(f"{self.uri}: {str(exc).strip()}") from exc
        if result is None or not result.IsValid():
            self._in_part_order(None)  # no frame coming: ignored triggers need not wait for one
            if self._ready:
                return self._ready.popleft()
            raise TimeoutError(f"{self.uri}: no frame within {timeout:.1f} s")
        wall, perf = time.time_ns(), time.perf_counter()
        captured = self._trigger_ns if 0 < self._trigger_ns <= wall else wall
        try:
            frame_id = int(result.BlockID)
            if not result.GrabSucceeded():
                detail = f"{result.ErrorDescription} (code {result.ErrorCode})"
                frame = Frame(frame_id, captured, wall, None, "grab_incomplete", detail, self.serial or "", perf)
            else:
                converted = self._converter.Convert(result) if self._converter is not None else result
                frame = Frame(
                    frame_id,
                    captured,
                    wall,
                    converted.GetArray().copy(),
                    name=self.serial or "",
                    t_received=perf,
                    camera_timestamp=int(result.TimeStamp),
                )
        finally:
            result.Release()
        self._in_part_order(frame)
        return self._ready.popleft()

    def _software_trigger(self, timeout: float) -> None:
        pylon, _ = _pylon()
        self._pacer.wait()  # with fps: one trigger per period; a late one goes now, never a burst to catch up
        if self._camera.WaitForFrameTriggerReady(int(timeout * 1000), pylon.TimeoutHandling_Return):
            self._trigger_ns = time.time_ns()
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

    def adjust(self, settings: dict) -> None:
        """New exposure and gain from the next frame on (kept for reconnects); SourceError if the camera refuses."""
        self.settings = dataclasses.replace(self.settings, **settings)
        if self._camera is None or not self._camera.IsOpen():
            return  # applied when the camera is opened again
        if "exposure_us" in settings:
            self._set(["ExposureTime", "ExposureTimeAbs"], float(settings["exposure_us"]))
        if "gain" in settings:
            self._set(["Gain", "GainRaw"], settings["gain"])

    def reconnect(self) -> None:
        """Open the same camera (by serial) again with the same settings; SourceError while it is absent."""
        self.close()
        self.index = None if self.serial else self.index
        self.open()


def _overtrigger_handler(source: BaslerSource):
    """A pylon camera-event handler that tells ``source`` of each over-trigger (pypylon is imported lazily)."""
    pylon, genicam = _pylon()

    class OvertriggerHandler(pylon.CameraEventHandler):
        def OnCameraEvent(self, camera, user_id, node) -> None:  # noqa: N802 (pylon's name)
            ticks = 0
            try:
                ticks = int(node.GetValue())  # the event's timestamp node, an integer parameter
            except Exception:  # on pylon's thread: the part is counted whatever the node says
                pass
            finally:
                source.overtrigger(ticks)

    return OvertriggerHandler()


register_source(
    SourceKind(
        "basler",
        "basler",
        "basler0, basler://SERIAL",
        lambda uri, fmt, camera: BaslerSource.from_uri(uri, CameraSettings(pixel_format=fmt, **camera)),
    )
)
