"""CURVE encryption and authentication for the station's sockets (ZeroMQ's CurveZMQ with the ZAP handler).

``edge-keys`` makes key pairs (ZeroMQ certificate files: NAME.key with the public key, NAME.key_secret with
both). The station binds with its secret certificate and admits only the clients whose public certificates lie
in the allow folder; a client needs its own secret certificate and the station's public one. Missing or
unreadable keys stop start-up: there is never a silent fall back to plaintext.
"""

from __future__ import annotations

from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


class SecurityError(Exception):
    """Keys that are missing, unreadable or incomplete."""


def make_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """Write a key pair; returns (public certificate, secret certificate)."""
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def load_secret(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) key from a secret certificate file."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read the secret key {path}: {exc}; make keys with edge-keys") from exc
    if not secret:
        raise SecurityError(f"{path} holds no secret key (is it the .key, not the .key_secret?)")
    return public, secret


def load_public(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read the public key {path}: {exc}") from exc
    return public


class CurveServer:
    """The station's side: its secret certificate and, per ZAP domain, the folder of admitted client certificates:
    ``station`` (subscribers: the verdict and snapshot sockets) and ``control`` (operators). ZeroMQ allows one
    authenticator per process, so this object owns it for all the station's sockets; ``stop`` it at the end."""

    def __init__(self, secret: Path, allow: Path, control_allow: Path | None = None) -> None:
        self.secret, self.allow, self.control_allow = Path(secret), Path(allow), control_allow
        self._authenticator: ThreadAuthenticator | None = None

    def folder(self, domain: str) -> Path:
        """The admitted clients' certificates for ``domain``."""
        folder = self.control_allow if domain == "control" else self.allow
        flag = "--control-allow" if domain == "control" else "--curve-allow"
        if folder is None or not Path(folder).is_dir() or not any(Path(folder).glob("*.key")):
            raise SecurityError(f"{flag} {folder}: no client public keys (*.key) there")
        return Path(folder)

    def apply(self, socket: zmq.Socket, domain: str = "station") -> None:
        """Make ``socket`` a CURVE server admitting only ``domain``'s clients."""
        folder = self.folder(domain)
        public, secret = load_secret(self.secret)
        if self._authenticator is None:
            self._authenticator = ThreadAuthenticator(zmq.Context.instance())
            self._authenticator.start()
        self._authenticator.configure_curve(domain=domain, location=str(folder))
        socket.zap_domain = domain.encode()
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True

    def names(self, domain: str) -> dict[str, str]:
        """Admitted public keys (Z85, as ZeroMQ reports a peer's User-Id) → the certificate's name."""
        found = {}
        for path in sorted(self.folder(domain).glob("*.key")):
            found[load_public(path).decode()] = path.stem
        return found

    def stop(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None


def apply_client(socket: zmq.Socket, secret: Path, server_public: Path) -> None:
    """Make ``socket`` a CURVE client with its own secret certificate and the station's public certificate."""
    public, own_secret = load_secret(secret)
    socket.curve_secretkey = own_secret
    socket.curve_publickey = public
    socket.curve_serverkey = load_public(server_public)
