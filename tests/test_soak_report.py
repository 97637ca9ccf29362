"""benchmarks.soak --report: a soak's JSON lines as the table the docs include."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.soak import main


def test_the_report_has_every_tenth_minute_and_the_end(tmp_path: Path) -> None:
    rows = [
        {"minute": m, "rss_mb": 200 + m / 10, "threads": 14, "fds": 100, "frames": 100 * m, "verdicts": 100 * m}
        | {"errors": {"engine_error": m}, "missing": 0, "p50": 12.5, "p99": 30.0}
        for m in range(1, 24)
    ]
    end = {
        "machine": {"cpu": "Some CPU", "cores": 2, "date": "2026-12-07 10:00:00"},
        "minutes": 23.0,
        "final_counters": {"frames": 2301, "verdicts": 2301, "pass": 2000, "fail": 278, "error": 23}
        | {"errors": {"engine_error": 23}},
        "missing_on_steady_subscriber": 0,
        "exit_code": 0,
        "passed": True,
        "injected": {"engine_error": 23},
        "json_lines": 2301,
        "reject_write_warnings": 23,
    }
    record = tmp_path / "soak.jsonl"
    record.write_text("".join(json.dumps(r) + "\n" for r in [*rows, end]))
    assert main(["--report", str(record)]) == 0
    table = (tmp_path / "soak.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:6]] == ["1", "10", "20", "23"]
    assert "2301 frames, 2301 verdicts" in table and "RSS 200.1–202.3 MB" in table and "Some CPU (2 cores)" in table
    assert "every verdict in the JSON-lines record: True" in table and "passed." in table
