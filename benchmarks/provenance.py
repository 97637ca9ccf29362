"""The line every results file starts with: the command that wrote it, the machine and the date."""

from __future__ import annotations

import shlex
import sys

from edge.bench import machine


def provenance(module: str, argv: list[str] | None) -> str:
    """``python -m benchmarks.NAME ARGS`` on CPU (N cores), DATE: what a reader needs to make the file again."""
    host = machine()
    words = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    return f"`python -m {module} {words}` on {cpu_words(host)}, {host['date']}"


def cpu_words(host: dict) -> str:
    """``CPU (its speed flags; N cores)`` from :func:`edge.bench.machine`'s record."""
    flags = ", ".join(host.get("cpu_flags", [])) or "no AVX"
    return f"{host['cpu']} ({flags}; {host['cores']} cores)"
