"""Copy results files into the README, which GitHub shows without includes: every block between
``<!-- include PATH -->`` and ``<!-- end include -->`` is replaced by the file at PATH (from the repository root)::

    python -m benchmarks.readme            # README.md
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from edge.tool import ToolError, run_tool

BLOCK = re.compile(r"(<!-- include (\S+) -->\n)(.*?)(<!-- end include -->)", re.S)


def included(text: str, root: Path) -> str:
    """``text`` with every include block holding its file as it is now."""

    def fill(match: re.Match) -> str:
        path = root / match.group(2)
        if not path.is_file():
            raise ToolError(f"{match.group(2)} not found: the README includes it; write it or fix the path")
        return match.group(1) + "\n" + path.read_text().strip() + "\n\n" + match.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="readme", description=__doc__.split("\n\n")[0])
    parser.add_argument("readme", nargs="?", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)

    def body() -> int:
        text = args.readme.read_text()
        args.readme.write_text(included(text, args.readme.resolve().parent))
        return 0

    return run_tool("readme", body, (OSError,))


if __name__ == "__main__":
    raise SystemExit(main())
