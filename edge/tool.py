"""How every command-line tool of the project ends on a problem the user can fix: one line
``PROG: error: MESSAGE`` on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable


class ToolError(Exception):
    """A problem the user can fix, found by the tool itself (a flag's value, an endpoint); the message says it."""


def fail(prog: str, message: object) -> int:
    """Print ``PROG: error: MESSAGE`` on stderr; returns the exit status, 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def run_tool(prog: str, body: Callable[[], int], user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Run a tool's ``body`` and return its exit status; a :class:`ToolError` or one of ``user_errors`` (the
    errors of the libraries the tool calls that a user can fix) ends it with :func:`fail`."""
    try:
        return body()
    except (ToolError, *user_errors) as exc:
        return fail(prog, exc)


def missing_extra(prog: str, extra: str, modules: tuple[str, ...]) -> int | None:
    """When any of ``modules`` is not installed: :func:`fail` with the extra that brings them (exit status 2);
    else None."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return fail(prog, f"{', '.join(missing)} not installed: pip install 'edge-inspect[{extra}]'")
