"""edge-console over HTTPS with a certificate: the session cookie is Secure and SameSite strict, a log-in with
the right password opens a session, a wrong one is refused with one log line, and plain HTTP is not served."""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the console extra is not installed")
pytest.importorskip("cryptography", reason="cryptography is not installed")

from tests.test_bridge import free_port, wait_port  # noqa: E402
from tests.test_console import PASSWORDS, console_command, users_file  # noqa: E402, F401


def self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert, private = folder / "console.crt", folder / "console.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, private


def test_the_console_serves_https_with_secure_sessions(users_file: Path, tmp_path: Path) -> None:  # noqa: F811
    cert, key = self_signed(tmp_path)
    port = free_port()
    console = subprocess.Popen(
        console_command(
            "--station", "line=tcp://127.0.0.1:1", "--users", str(users_file), "--listen", f"0.0.0.0:{port}",
            "--certificate", str(cert), "--private-key", str(key),
        ),
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert))
    try:
        wait_port(port, console)
        base = f"https://127.0.0.1:{port}"

        def post(path: str, body: dict, cookie: str = "") -> tuple[int, dict, str]:
            request = urllib.request.Request(
                base + path, json.dumps(body).encode(), {"Content-Type": "application/json", "Cookie": cookie}
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=10) as response:
                    return response.status, json.loads(response.read()), response.headers.get("set-cookie", "")
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read()), ""

        with urllib.request.urlopen(base + "/api/session", context=context, timeout=10) as response:
            session = json.loads(response.read())
        assert session["login"] is True and session["user"] is None
        refused = post("/api/login", {"user": "alice", "password": "wrong"})
        assert refused[0] == 401 and refused[1]["error"] == "wrong user name or password"
        status, answer, cookie = post("/api/login", {"user": "alice", "password": PASSWORDS["alice"]})
        assert status == 200 and answer["role"] == "operator"
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert "secure" in attributes and "samesite=strict" in attributes and "httponly" in attributes
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/session", timeout=5).read()
        time.sleep(0.2)
    finally:
        console.terminate()
        console.wait(timeout=20)
    log = console.stderr.read()
    assert log.count("log-in refused for 'alice'") == 1 and "Traceback" not in log
