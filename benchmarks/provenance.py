"""The line every results file starts with: the command that wrote it, the machine and the date."""

from __future__ import annotations

import shlex
import sys

from edge.bench import machine


def provenance(module: str, argv: list[str] | None) -> str:
    """``python -m benchmarks.NAME ARGS`` on CPU (N cores), DATE: what a reader needs to make the file again."""
    host = machine()
    words = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    flags = ", ".join(host["cpu_flags"]) or "no AVX"
    return f"`python -m {module} {words}` on {host['cpu']} ({flags}; {host['cores']} cores), {host['date']}"
