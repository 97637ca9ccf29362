"""OPC UA application certificates (``edge-bridge certs``): self-signed, RSA 2048, SHA-256, with the application
URI and host name as subject alternative names, the key usages OPC UA asks for, and server or client
authentication as extended key usage."""

from __future__ import annotations

from pathlib import Path


def make_certificate(folder: Path, name: str, uri: str, host: str, client: bool, days: int) -> tuple[Path, Path]:
    """Write NAME.der (certificate) and NAME.pem (private key, mode 600); returns their paths."""
    from asyncua.crypto.cert_gen import (
        dump_private_key_as_pem,
        generate_private_key,
        generate_self_signed_app_certificate,
    )
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    names = [x509.UniformResourceIdentifier(uri), x509.DNSName(host)]
    certificate = generate_self_signed_app_certificate(key, name, {}, names, extended=usage, days=days)
    certificate_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    key_path.touch(mode=0o600, exist_ok=True)
    key_path.chmod(0o600)
    key_path.write_bytes(dump_private_key_as_pem(key))
    certificate_path.write_bytes(certificate.public_bytes(Encoding.DER))
    return certificate_path, key_path
