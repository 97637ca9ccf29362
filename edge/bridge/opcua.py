"""OPC UA (asyncua): one object per station, its variables read-only for clients.

Node ids are strings in the namespace ``urn:edge-inspect:bridge`` (index 2 on this server): the station object
is ``ns=2;s=<station>`` and its variables ``ns=2;s=<station>.<Name>``:

===========  ========  ==================================================================================
Name         type      value
===========  ========  ==================================================================================
Seq          UInt64    the last verdict's seq (per station run, from 0): **written last**
PartId       String    ``<station>/<run_id>/<seq>``: the verdict's identity across station restarts
RunId        String    the station run that verdict belongs to
FrameId      Int64     the camera's frame id (-1: a part the camera made no frame of)
Verdict      String    pass, fail or error
Reason       String    the error reason ("" for pass and fail)
Score        Double    image score (NaN for error verdicts)
Threshold    Double    the threshold it was judged with
TimeCapture  DateTime  when the frame was captured (UTC)
Passed       UInt64    the station's counters for its current run …
Failed       UInt64
Errors       UInt64
Missed       UInt64    … and verdicts of this run the bridge never received (gaps in seq)
State        String    running, degraded, stalled or offline (from the station's heartbeat)
Health       String    the station's own health word (ok, degraded, camera_lost, paused, engine_error)
Recipe       String    the recipe in force (``edge-run --recipes``; "" for a station with one engine)
SetRecipe    method    (name: String) → (ok: Boolean, message: String): switch the station's recipe from its next
                       frame, through its control socket (only for stations the bridge has a ``control`` link to)
===========  ========  ==================================================================================

The values of one verdict are written together, with the station's publish time as their SourceTimestamp and
``Seq`` last, so a client that triggers on ``Seq`` reads a consistent set (a client that monitors several
variables can group them by SourceTimestamp). While the station is offline, and until its next verdict, the
verdict values and counters carry the status Uncertain_LastUsableValue: they are kept, never passed off as
current. Before the first verdict they are Bad_WaitingForInitialData.

Security: with no certificates, one endpoint without security (for loopback and test benches; a warning says so
on any other address). With ``opcua_certificate`` and ``opcua_private_key`` (``edge-bridge certs``), one endpoint,
Basic256Sha256 Sign&Encrypt; a client must present a certificate from ``opcua_trusted`` both for the secure
channel and as its user identity: anonymous access is off.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from edge.bridge import bind_error
from edge.bridge.outputs import OutputError, OutputKind, register_output
from edge.bridge.station import StationView
from edge.config import ConfigError

try:
    from asyncua import Server, ua
    from asyncua.crypto import uacrypto
    from asyncua.crypto.permission_rules import UserRole
    from asyncua.crypto.truststore import TrustStore
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
    from asyncua.server.user_managers import CertificateUserManager
    from cryptography import x509
except ImportError:  # the bridge extra; edge-bridge names what to install
    Server = None

log = logging.getLogger(__name__)

NAMESPACE = "urn:edge-inspect:bridge"
VERDICT_VARIABLES = (
    ("Seq", "UInt64"),
    ("PartId", "String"),
    ("RunId", "String"),
    ("FrameId", "Int64"),
    ("Verdict", "String"),
    ("Reason", "String"),
    ("Score", "Double"),
    ("Threshold", "Double"),
    ("TimeCapture", "DateTime"),
)
COUNTER_VARIABLES = (("Passed", "UInt64"), ("Failed", "UInt64"), ("Errors", "UInt64"), ("Missed", "UInt64"))
STATE_VARIABLES = (("State", "String"), ("Health", "String"), ("Recipe", "String"))
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
INITIAL = {"UInt64": 0, "Int64": 0, "String": "", "Double": math.nan, "DateTime": EPOCH}


class OpcuaError(OutputError):
    """The OPC UA server cannot start; the message says why."""


def utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def certificate_uri(certificate: x509.Certificate) -> str | None:
    """The application URI in a certificate's subject alternative names."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


@dataclass
class OpcuaSettings:
    """``opcua = …`` and ``opcua_*`` in ``[bridge]``; ``--opcua`` and ``--opcua-*`` flags."""

    address: str = field(
        default="opc.tcp://0.0.0.0:4840/edge/", metadata={"help": "OPC UA endpoint opc.tcp://HOST:PORT/PATH, or off"}
    )
    certificate: str | None = field(
        default=None,
        metadata={"help": "the bridge's certificate (DER; edge-bridge certs): Sign&Encrypt on", "group": "security"},
    )
    private_key: str | None = field(default=None, metadata={"help": "its private key (PEM)", "group": "security"})
    trusted: str | None = field(
        default=None, metadata={"help": "folder of the admitted clients' certificates (DER)", "group": "security"}
    )

    def check(self) -> None:
        url = urlparse(self.address)
        if url.scheme != "opc.tcp" or not url.hostname or url.port is None:
            raise ConfigError(f"opcua = {self.address!r}: write opc.tcp://HOST:PORT/PATH (or off)")
        if (self.certificate is None) != (self.private_key is None):
            raise ConfigError("OPC UA security needs both opcua_certificate and opcua_private_key (edge-bridge certs)")
        if self.certificate is not None and not self.trusted:
            raise ConfigError(
                "with OPC UA certificates, give opcua_trusted: a folder of admitted clients' certificates"
            )


class OpcuaOutput:
    """The OPC UA server for all stations."""

    name = "opcua"

    def __init__(
        self,
        endpoint: str,
        views: list[StationView],
        certificate: str | None = None,
        private_key: str | None = None,
        trusted: str | None = None,
        metrics=None,
    ) -> None:
        self.endpoint, self.views, self.metrics = endpoint, views, metrics
        self.certificate, self.private_key, self.trusted = certificate, private_key, trusted
        self.server = None
        self._nodes: dict[str, dict[str, ua.NodeId]] = {}
        self._current: dict[str, bool] = {}

    async def start(self) -> None:
        url = urlparse(self.endpoint)
        if reason := bind_error(url.hostname, url.port):
            raise OpcuaError(f"cannot serve OPC UA on {self.endpoint}: {reason}")
        server = self.server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("edge-inspect bridge")
        if self.certificate:
            await self._secure(server)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            server.set_identity_tokens([ua.AnonymousIdentityToken])
            if urlparse(self.endpoint).hostname not in ("127.0.0.1", "localhost", "::1"):
                log.warning("OPC UA without security on %s: anyone on that network reads the verdicts", self.endpoint)
        index = await server.register_namespace(NAMESPACE)
        for view in self.views:
            station = await server.nodes.objects.add_object(ua.NodeId(view.name, index), f"{index}:{view.name}")
            nodes = {}
            for name, kind in (*VERDICT_VARIABLES, *COUNTER_VARIABLES, *STATE_VARIABLES):
                node = await station.add_variable(
                    ua.NodeId(f"{view.name}.{name}", index),
                    f"{index}:{name}",
                    INITIAL[kind],
                    getattr(ua.VariantType, kind),
                )
                nodes[name] = node.nodeid
            if view.control is not None:
                await station.add_method(
                    ua.NodeId(f"{view.name}.SetRecipe", index), f"{index}:SetRecipe", self._set_recipe(view),
                    [ua.VariantType.String], [ua.VariantType.Boolean, ua.VariantType.String],
                )  # fmt: skip
            self._nodes[view.name] = nodes
            waiting = ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
            for name, kind in (*VERDICT_VARIABLES, *COUNTER_VARIABLES):
                await self._write(nodes[name], kind, INITIAL[kind], waiting, None)
            await self.status(view)
        try:
            await server.start()
        except OSError as exc:
            raise OpcuaError(f"cannot serve OPC UA on {self.endpoint}: {exc.strerror or exc}") from exc
        log.info("OPC UA on %s (namespace %s = ns=%d)", self.endpoint, NAMESPACE, index)

    @staticmethod
    def _set_recipe(view: StationView):
        """The SetRecipe method of ``view``'s station: its control request, sent off the loop's thread."""

        async def set_recipe(parent, name) -> list:
            text = name.Value if isinstance(name, ua.Variant) else name
            if not isinstance(text, str) or not text:
                answer = {"ok": False, "error": "SetRecipe takes the recipe's name"}
            else:
                request = {"command": "set_recipe", "name": text}
                answer = await asyncio.get_running_loop().run_in_executor(None, view.control, request)
            message = answer.get("error") or f"recipe {text} armed: in force from the station's next frame"
            log.info("OPC UA SetRecipe(%r) for %s: %s", text, view.name, message)
            return [
                ua.Variant(bool(answer.get("ok")), ua.VariantType.Boolean),
                ua.Variant(message, ua.VariantType.String),
            ]

        return set_recipe

    async def _secure(self, server) -> None:
        """Basic256Sha256 Sign&Encrypt only, trusted client certificates only, no anonymous users."""
        try:
            certificate = await uacrypto.load_certificate(self.certificate)
            await server.load_certificate(self.certificate)
            await server.load_private_key(self.private_key)
        except (OSError, ValueError) as exc:
            raise OpcuaError(
                f"cannot load the OPC UA certificate or key ({exc}); make them: edge-bridge certs"
            ) from exc
        uri = certificate_uri(certificate)
        if uri:
            await server.set_application_uri(uri)
        trusted = sorted(p for p in Path(self.trusted).glob("*.*") if p.suffix.lower() in (".der", ".pem"))
        if not trusted:
            raise OpcuaError(f"opcua_trusted {self.trusted}: no client certificates (*.der, *.pem) there")
        for path in trusted:
            try:
                await uacrypto.load_certificate(path)
            except ValueError as exc:
                raise OpcuaError(f"{path} is not a certificate: keep only clients' certificates there") from exc
        store = TrustStore([Path(self.trusted)], [])
        await store.load()
        options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        server.set_certificate_validator(CertificateValidator(options, store))
        users = CertificateUserManager()
        for path in trusted:
            await users.add_role(path, UserRole.User, path.stem)
        server.iserver.set_user_manager(users)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_identity_tokens([ua.X509IdentityToken])

    async def _write(self, node, kind: str, value, status, source: datetime | None) -> None:
        data = ua.DataValue(
            ua.Variant(value, getattr(ua.VariantType, kind)),
            StatusCode=status,
            SourceTimestamp=source,
            ServerTimestamp=datetime.now(timezone.utc),
        )
        await self.server.write_attribute_value(node, data)

    def _verdict_values(self, view: StationView) -> list[tuple[str, str, object]]:
        last = view.last
        values = {
            "Seq": last["seq"],
            "PartId": view.part_id(),
            "RunId": last["run_id"],
            "FrameId": last["frame_id"],
            "Verdict": last["verdict"],
            "Reason": last.get("reason") or "",
            "Score": math.nan if last.get("score") is None else float(last["score"]),
            "Threshold": math.nan if last.get("threshold") is None else float(last["threshold"]),
            "TimeCapture": utc(last["t_capture_ns"]),
        }
        ordered = [name for name, _ in VERDICT_VARIABLES if name != "Seq"] + ["Seq"]  # Seq last
        kinds = dict(VERDICT_VARIABLES)
        return [(name, kinds[name], values[name]) for name in ordered]

    def _counter_values(self, view: StationView) -> list[tuple[str, str, object]]:
        counters = {"Passed": view.passed, "Failed": view.failed, "Errors": view.errors, "Missed": view.missed}
        return [(name, kind, counters[name]) for name, kind in COUNTER_VARIABLES]

    async def verdict(self, view: StationView) -> None:
        await self._write_verdict(view, fresh=True)

    async def current(self, view: StationView) -> None:
        await self._write_verdict(view, fresh=False)

    async def _write_verdict(self, view: StationView, fresh: bool) -> None:
        """A verdict: counters, then the verdict's values, ``Seq`` last, all with the same timestamps. ``fresh``:
        just received (timed for the latency metric), not shown from a snapshot."""
        nodes, good = self._nodes[view.name], ua.StatusCode(ua.StatusCodes.Good)
        source = utc(view.last["t_publish_ns"])
        await self._write_state(view)
        for name, kind, value in self._counter_values(view) + self._verdict_values(view):
            await self._write(nodes[name], kind, value, good, source)
        self._current[view.name] = True
        if self.metrics is not None and fresh:
            self.metrics.written("opcua", view.last["t_publish_ns"])

    async def status(self, view: StationView) -> None:
        """State and counters changed; values that are no longer current are marked so."""
        await self._write_state(view)
        nodes = self._nodes[view.name]
        current = view.current and view.last is not None
        if view.last is not None and self._current.get(view.name, False) != current:
            self._current[view.name] = current
            status = ua.StatusCode(ua.StatusCodes.Good if current else ua.StatusCodes.UncertainLastUsableValue)
            for name, kind, value in self._verdict_values(view):
                await self._write(nodes[name], kind, value, status, utc(view.last["t_publish_ns"]))
        if view.run_id is not None:  # counters are known once a run is followed
            online = view.state != "offline"
            status = ua.StatusCode(ua.StatusCodes.Good if online else ua.StatusCodes.UncertainLastUsableValue)
            for name, kind, value in self._counter_values(view):
                await self._write(nodes[name], kind, value, status, None)

    async def _write_state(self, view: StationView) -> None:
        nodes, good = self._nodes[view.name], ua.StatusCode(ua.StatusCodes.Good)
        await self._write(nodes["State"], "String", view.state, good, None)
        await self._write(nodes["Health"], "String", view.health, good, None)
        await self._write(nodes["Recipe"], "String", view.recipe, good, None)

    def clients(self) -> int:
        """Connected OPC UA clients."""
        return len(self.server.bserver.clients) if self.server is not None and self.server.bserver else 0

    def tick(self) -> None:
        pass

    def metric_families(self) -> list:
        return []

    def station_summary(self, station: str) -> str:
        return ""

    async def stop(self) -> None:
        if self.server is not None and self.server.bserver is not None:
            await self.server.stop()


register_output(
    OutputKind(
        name="opcua",
        summary="OPC UA server: one object per station, Seq written last",
        settings=OpcuaSettings,
        build=lambda settings, views, metrics: OpcuaOutput(
            settings.address, views, settings.certificate, settings.private_key, settings.trusted, metrics
        ),
    )
)
