"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``) without extra packages.

``READY=1`` once the engine is warm and the socket bound, ``WATCHDOG=1`` with every heartbeat while the station
makes progress (a hung inference stops it, so systemd restarts the service), ``STOPPING=1`` on the way out.
Does nothing when not started by systemd (no ``NOTIFY_SOCKET``).
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` to systemd; False when not running under systemd or the socket is gone."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
