"""The line against its engine, from ``edge-bench`` results: one row per run (runs of several checkouts, taken in
turns, make a before/after table). Per run: the engine alone at batch 1 (where the run timed it before and after
the line, their mean is the reference), the line at full rate as a share of it, and what the line adds to a frame
paced like a camera (received → published p50 minus the engine's p50 alone; minus the engine alone called at the
same pace in rounds that take turns with the line, where the run has them; and minus the run's own inference p50)::

    python -m benchmarks.line_table before-1 after-1 before-2 after-2 --out benchmarks/results/line/table.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.provenance import cpu_words
from edge.tool import ToolError, run_tool


def row(name: str, result: dict) -> str:
    """One run's line of the table."""
    alone = [r for r in result["engine_only"] if r["batch"] == 1]
    alone += [result["engine_alone_after_line"]] if result.get("engine_alone_after_line") else []
    alone_p50 = sum(r["latency_ms"]["p50"] for r in alone) / len(alone)
    alone_rate = sum(r["frames_per_s"] for r in alone) / len(alone)
    measured = " → ".join(f"{r['latency_ms']['p50']:.2f}" for r in alone)
    full, paced = result["pipeline"], result["pipeline_paced"]
    receive = paced["stages_ms"]["receive_to_publish"]
    added = receive["p50"] - alone_p50
    own = receive["p50"] - paced["stages_ms"]["infer"]["p50"]
    return (
        f"| {name} | {measured} ({alone_rate:.1f}) | {full['frames_per_s']:.1f} "
        f"({100 * full['frames_per_s'] / alone_rate:.0f} %) | {receive['p50']:.2f} / {receive['p99']:.1f} | "
        f"{added:+.2f} ({100 * added / alone_p50:+.1f} %) | {added_in_turns_cell(paced)} | {own:+.2f} | "
        f"{paced.get('failed', '–')}/{paced['frames']} |"
    )


def added_in_turns_cell(paced: dict) -> str:
    """The line's receive → publish p50 minus the engine alone's p50, both paced alike in the same round: the
    median over rounds, and its share of the engine's median p50 (``–`` for runs timed before rounds)."""
    rounds = paced.get("rounds")
    if not rounds:
        return "–"
    alone = statistics.median(r["engine_alone_p50"] for r in rounds)
    added = statistics.median(r["added_p50"] for r in rounds)
    return f"{added:+.2f} ({100 * added / alone:+.1f} %)"


def markdown(runs: dict[str, dict]) -> str:
    """The table, with each run's machine and date."""
    lines = [
        "| run | engine alone p50 ms (frames/s; before → after the line: their mean) "
        "| line at full rate, frames/s (of the engine's) | paced at 70 %: "
        "receive → publish p50 / p99 ms | − engine alone p50 (of it) | − engine alone paced alike, in turns: "
        "median of rounds (of it) | − the run's own infer p50 | verdicts `fail` |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [row(name, result) for name, result in runs.items()]
    lines.append("")
    for name, result in runs.items():
        host = result["machine"]
        records = " with a station's records" if result["pipeline"].get("records") else ""
        lines.append(
            f"- {name}: {result['engine']} ({result['backend']}, {result['precision']}){records}, "
            f"{cpu_words(host)}, {host['date']}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="line_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="edge-bench --out folders (bench.json), in run order")
    parser.add_argument("--out", type=Path, help="Markdown file to write")
    args = parser.parse_args(argv)

    def body() -> int:
        runs = {}
        for folder in args.runs:
            path = folder / "bench.json"
            if not path.is_file():
                raise ToolError(f"{path} not found: give folders that edge-bench --out wrote")
            result = json.loads(path.read_text())
            batch_one = result.get("engine_alone_after_line") or any(r["batch"] == 1 for r in result["engine_only"])
            if "pipeline_paced" not in result or not batch_one:
                raise ToolError(f"{path} has no pipeline run at batch 1: run edge-bench without --no-pipeline")
            runs[folder.name] = result
        text = markdown(runs)
        print(text, end="")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        return 0

    return run_tool("line_table", body, (OSError, KeyError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
