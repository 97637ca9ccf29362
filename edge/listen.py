"""``edge-listen``: a subscriber that prints verdicts, detects gaps and summarises."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

from edge.client import VerdictSubscriber


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _line(v: dict) -> str:
    score = "-" if v.get("score") is None else f"{v['score']:.4f}"
    what = v["verdict"].upper() + (f" ({v['reason']})" if v.get("reason") else "")
    total = (v.get("latency_ms") or {}).get("total")
    latency = f"{total:.1f} ms" if total is not None else "-"
    regions = f" regions {len(v['regions'])}" if v.get("regions") else ""
    return f"{v['station']} seq {v['seq']:>6} frame {v['frame_id']:>6} {what:<24} score {score} {latency}{regions}"


def listen(
    endpoint: str,
    station: str = "",
    count: int | None = None,
    idle_timeout: float | None = None,
    jsonl: Path | None = None,
    quiet: bool = False,
    curve: tuple[Path, Path] | None = None,
) -> int:
    """Receive until a stop condition; print the summary. Returns 0, or 1 if verdicts went missing."""
    signal.signal(signal.SIGTERM, _interrupt)
    subscriber = VerdictSubscriber(endpoint, station, curve=curve)
    verdicts: Counter = Counter()
    out = open(jsonl, "w", encoding="utf-8") if jsonl else None  # noqa: SIM115
    final = None
    try:
        for kind, payload in subscriber.messages(idle_timeout):
            if kind == "verdict":
                verdicts[payload["verdict"]] += 1
                if out:
                    out.write(json.dumps(payload) + "\n")
                    out.flush()
                if not quiet:
                    print(_line(payload), flush=True)
                if count is not None and subscriber.state.verdicts >= count:
                    break
            elif kind == "status":
                if not quiet:
                    print(f"{payload['station']} status {payload.get('state')} health {payload.get('health')}")
                if payload.get("final"):
                    final = payload
                    break
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.close()
        if out:
            out.close()
    state = subscriber.state
    summary = {
        "verdicts": state.verdicts,
        "pass": verdicts["pass"],
        "fail": verdicts["fail"],
        "error": verdicts["error"],
        "missing": state.missing,
        "gaps": state.gaps[:20],
    }
    if final is not None:
        summary["publisher_counters"] = final.get("counters")
    print(json.dumps(summary), flush=True)
    return 1 if state.missing else 0
