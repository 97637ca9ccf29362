"""The control socket (REQ/REP): an operator changes the thresholds, or pauses the station, without a restart.

Nobody else may: the socket binds to this machine only (``tcp://127.0.0.1:…``, ``tcp://[::1]:…``, ``ipc://…``)
unless CURVE is on with an operators' key folder (``--control-allow``, apart from the subscribers' keys), and then
it admits only those keys. Every request is validated (one JSON object of at most 4 KiB, a known command, known
fields, values in range) and logged with who sent it; the station announces every change on its status topic.
A change lasts for the run: the calibrated threshold in the sidecar changes only through ``edge-calibrate``.

Requests, and what they answer (errors: ``{"ok": false, "error": "..."}``)::

    {"command": "status"}                                        {"ok": true, "status": {...}}
    {"command": "set_threshold", "score": 0.42, "pixel": 0.5}    {"ok": true, "thresholds": {...}}
    {"command": "pause", "reason": "changeover"}                 {"ok": true, "paused": true}
    {"command": "resume"}                                        {"ok": true, "paused": false}
    {"command": "set_recipe", "name": "B", "at_frame": 1200}     {"ok": true, "armed": {...}, "at_frame": 1200}
    {"command": "calibration"}                                   {"ok": true, "score": {...}, "calibration": {...}}

Any request may say whom it is made for (``"for": "alice"``: a console's logged-in operator); the station's log
and status topic then name them with the client that sent it.

``set_recipe`` loads and warms recipe ``name`` (:mod:`edge.recipes`; or the one whose ``number`` the PLC gives:
``{"number": 2}``) beside the running one and answers once the switch is armed: from the next frame read, or
from the first frame whose id reaches ``at_frame`` (a part boundary the PLC gives). The status topic announces
the frame the new recipe starts at.

While paused every captured frame is still accounted for: it gets ``error(paused)``, never a ``pass``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable

import zmq

from edge.security import CurveServer, SecurityError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
# Each command and the fields it takes: name → (required, check)
# The engine's sidecar says whether thresholds are probabilities (≤ 1) or distances; the pipeline checks that.
_THRESHOLD = (
    lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 and math.isfinite(v),
    "a finite number ≥ 0 (in [0, 1] for probability scores)",
)
_SHORT_TEXT = (lambda v: isinstance(v, str) and len(v) <= 200, "a text of at most 200 characters")
_NAME = (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a recipe name (at most 64 characters)")
_NUMBER = (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535, "a recipe number 1…65535")
_FRAME_ID = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a frame id (an integer ≥ 0)")
COMMANDS: dict[str, dict[str, tuple[bool, tuple]]] = {
    "status": {},
    "set_threshold": {"score": (False, _THRESHOLD), "pixel": (False, _THRESHOLD)},
    "pause": {"reason": (False, _SHORT_TEXT)},
    "resume": {},
    "set_recipe": {"name": (False, _NAME), "number": (False, _NUMBER), "at_frame": (False, _FRAME_ID)},
    "calibration": {},
}


class ControlError(Exception):
    """The control socket cannot be set up safely."""


def is_local(endpoint: str) -> bool:
    """Whether ``endpoint`` can only be reached from this machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    match = re.fullmatch(r"tcp://(.+):(\d+|\*)", endpoint)
    return bool(match) and match.group(1) in ("127.0.0.1", "localhost", "[::1]")


def parse_request(raw: bytes) -> dict:
    """The validated request; ValueError with what is wrong and what to send instead."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise ValueError(f"request of {len(raw)} bytes: at most {MAX_REQUEST_BYTES}")
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f'not JSON ({exc}); send e.g. {{"command": "status"}}') from None
    if not isinstance(request, dict) or request.get("command") not in COMMANDS:
        raise ValueError(f'send a JSON object with "command" one of {", ".join(COMMANDS)}')
    fields = COMMANDS[request["command"]] | {"for": (False, _SHORT_TEXT)}
    unknown = set(request) - {"command"} - set(fields)
    if unknown:
        raise ValueError(
            f"{request['command']} takes {', '.join(COMMANDS[request['command']]) or 'no fields'}, not "
            f"{', '.join(sorted(unknown))}"
        )
    for name, (required, (check, wanted)) in fields.items():
        if name not in request:
            if required:
                raise ValueError(f"{request['command']} needs {name}")
            continue
        if not check(request[name]):
            raise ValueError(f"{name} must be {wanted}, got {request[name]!r}")
    if request["command"] == "set_threshold" and not {"score", "pixel"} & set(request):
        raise ValueError("set_threshold needs score, pixel, or both")
    return request


class ControlServer:
    """Serves control requests from its own thread; ``apply`` carries a valid request out and returns the answer."""

    def __init__(self, endpoint: str, apply: Callable[[dict, str], dict], curve: CurveServer | None = None) -> None:
        self._apply = apply
        use_curve = curve is not None and curve.control_allow is not None
        if not is_local(endpoint) and not use_curve:
            raise ControlError(
                f"control on {endpoint} would let anyone on the network change the station: bind it to "
                "tcp://127.0.0.1:PORT or ipc://PATH, or turn on CURVE with --control-allow DIR (operators' keys)"
            )
        self._stop = threading.Event()
        self._socket = zmq.Context.instance().socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES + 1)  # larger requests drop their connection
        self._operators: dict[str, str] = {}
        try:
            if use_curve:
                curve.apply(self._socket, domain="control")
                self._operators = curve.names("control")
            self._socket.bind(endpoint)
        except (zmq.ZMQError, SecurityError) as exc:
            self._socket.close(0)
            raise ControlError(f"cannot serve control requests on {endpoint}: {exc}") from exc
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _who(self, frame: zmq.Frame) -> str:
        """The sender, for the log: the operator's certificate name under CURVE, else its address."""
        try:
            user = frame.get("User-Id")
        except zmq.ZMQError:
            user = ""
        try:
            address = frame.get("Peer-Address")
        except zmq.ZMQError:
            address = ""
        name = self._operators.get(user, "")
        return " ".join(part for part in (f"operator {name}" if name else "", address or "local") if part)

    def _serve(self) -> None:
        """Answer every request, whatever it is (REP must answer before it can receive again); the socket is this
        thread's, closed by it at the end."""
        try:
            while not self._stop.is_set():
                if not self._socket.poll(200):
                    continue
                parts = self._socket.recv_multipart(copy=False)
                who = self._who(parts[0])
                self._socket.send(json.dumps(self._answer(parts, who)).encode())
        finally:
            self._socket.close(0)

    def _answer(self, parts: list, who: str) -> dict:
        try:
            if len(parts) != 1:
                raise ValueError(f"send one message part, not {len(parts)}")
            request = parse_request(parts[0].bytes)
            if "for" in request:  # a console acting for a person logged in to it
                who = f"{request.pop('for')} via {who}"
        except ValueError as exc:
            log.warning("control request from %s refused: %s", who, exc)
            return {"ok": False, "error": str(exc)}
        try:
            answer = self._apply(request, who)
        except Exception as exc:  # the operator gets an answer, and the control thread lives on
            log.error("control request from %s failed: %s", who, exc)
            return {"ok": False, "error": f"the station could not carry it out: {exc}"}
        if not answer.get("ok"):
            log.warning("control request from %s refused: %s", who, answer.get("error"))
        elif request["command"] != "status":
            log.info("control from %s: %s → %s", who, json.dumps(request), json.dumps(answer))
        return answer

    def close(self) -> None:
        """Stop serving; waits for a request being carried out (at most the pipeline's 2 s) to be answered."""
        self._stop.set()
        self._thread.join()
