"""Command-line flags made from settings dataclasses, so that each setting's name, type, default and help are
written once, beside the field (``field(default=…, metadata={"help": …})``).

Metadata keys: ``help``; ``group`` (the title of the flag's argument group); ``choices`` (a sequence, or a
function returning one, called when the parser is built); ``flag`` (False: no flag, TOML only). A field's
default is named in its help unless it is None, empty or False. Flags default to None ("not given") so that a
TOML file's values stand unless a flag overrides them.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable

TYPES = {"int": int, "float": float}


def add_flags(
    parser: argparse.ArgumentParser,
    settings: Iterable[tuple[str, dataclasses.Field]],
    titles: dict[str, str] | None = None,
) -> dict[str, argparse._ArgumentGroup]:
    """A ``--key-name`` flag for each ``(key, field)``; fields with a ``group`` go to that argument group (its
    title from ``titles``, else the group's name). Returns the groups made, by name."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    titles = titles or {}
    for key, spec in settings:
        meta = spec.metadata
        if meta.get("flag", True) is False:
            continue
        group = meta.get("group")
        target = parser
        if group is not None:
            if group not in groups:
                groups[group] = parser.add_argument_group(titles.get(group, group))
            target = groups[group]
        kind = spec.type.split(" | ")[0] if isinstance(spec.type, str) else spec.type.__name__
        default = None if spec.default is dataclasses.MISSING else spec.default
        text = meta.get("help", "")
        if default not in (None, "", False, ()):
            text += f" (default {default})"
        flag = f"--{key.replace('_', '-')}"
        if kind == "bool":
            target.add_argument(flag, dest=key, action="store_true", default=None, help=text)
            continue
        if kind == "tuple[str, ...]":  # a flag given once per value
            target.add_argument(flag, dest=key, action="append", default=None, help=text)
            continue
        choices = meta.get("choices")
        target.add_argument(
            flag, dest=key, type=TYPES.get(kind), choices=choices() if callable(choices) else choices, help=text
        )
    return groups


def given(args: argparse.Namespace, keys: Iterable[str]) -> dict:
    """The flags of ``keys`` as parsed (None: not given)."""
    return {key: getattr(args, key, None) for key in keys}
