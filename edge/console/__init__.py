"""``edge-console``: the web page a line engineer and an operator use to see and steer their stations.

A separate process, like ``edge-bridge``: it follows stations over ZeroMQ as any subscriber does (the line never
waits on it: :mod:`edge.bridge.feed`), asks for previews only while someone watches a station's live view, and
serves one page (plain HTML, JavaScript and CSS from the package: no build step, no CDN) with server-sent events.
Its libraries come with the ``console`` extra (``pip install 'edge-inspect[console]'``).
"""

from __future__ import annotations

LIBRARIES = ("starlette", "uvicorn", "argon2", "itsdangerous", "scipy")  # the console extra's
