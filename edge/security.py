"""CURVE encryption and authentication for the station's sockets (ZeroMQ's CurveZMQ with the ZAP handler).

``edge-keys`` makes key pairs (ZeroMQ certificate files: NAME.key with the public key, NAME.key_secret with
both). The station binds with its secret certificate and admits only the clients whose public certificates lie
in the allow folder; a client needs its own secret certificate and the station's public one. Missing or
unreadable keys stop start-up: there is never a silent fall back to plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class CurveServer:
    """The station's side: its secret certificate and the folder of admitted client certificates."""

    secret: Path
    allow: Path

    def apply(self, socket: zmq.Socket) -> ThreadAuthenticator:
        """Make ``socket`` a CURVE server admitting only allowed clients; returns the running authenticator."""
        if not self.allow.is_dir() or not any(self.allow.glob("*.key")):
            raise SecurityError(f"--curve-allow {self.allow}: no client public keys (*.key) there")
        public, secret = load_secret(self.secret)
        authenticator = ThreadAuthenticator(zmq.Context.instance())
        authenticator.start()
        authenticator.configure_curve(domain="*", location=str(self.allow))
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True
        return authenticator


def apply_client(socket: zmq.Socket, secret: Path, server_public: Path) -> None:
    """Make ``socket`` a CURVE client with its own secret certificate and the station's public certificate."""
    public, own_secret = load_secret(secret)
    socket.curve_secretkey = own_secret
    socket.curve_publickey = public
    socket.curve_serverkey = load_public(server_public)
