"""Soak: the whole pipeline for a long time, with subscribers coming and going and, with ``--faults``, a fault
of each kind injected every minute.

Runs ``edge-run`` on pylon's emulated camera (or any ``--camera``) in a subprocess, keeps one steady subscriber
and churns others, and records once a minute: frames, verdicts, errors by reason (from the heartbeats), RSS,
open file descriptors and threads of the station process, and the steady subscriber's latency percentiles and
missing verdicts. Passes when no verdict was lost (frames = verdicts at the end, no gap in ``seq``, every verdict
in the JSON-lines record) and the resource curves stay flat.

``--faults``: the station runs as ``benchmarks.soak_station`` with reject records and a JSON-lines record, and
each minute gets, 15 s apart: an engine call that raises (SIGUSR1 to the station), a sink error (the reject
folder replaced by a file for 10 s: the records fail, the line must not), a burst of 10 subscribers that connect
and vanish, and the emulated camera unplugged (SIGUSR2: its pylon device destroyed under the grab).

    PYLON_CAMEMU=1 python -m benchmarks.soak --engine runs/demo/memseg.onnx --images runs/demo/camera --minutes 60
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edge.bench import machine
from edge.client import VerdictSubscriber


def free_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def process_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def churn(endpoint: str, stop: threading.Event, rng: random.Random) -> None:
    """Subscribers that join, read a while, and leave (sometimes without reading at all)."""
    while not stop.is_set():
        subscriber = VerdictSubscriber(endpoint)
        until = time.monotonic() + rng.uniform(2, 10)
        reads = rng.random() > 0.3
        while time.monotonic() < until and not stop.is_set():
            subscriber.poll(0.2) if reads else time.sleep(0.2)
        subscriber.close()
        stop.wait(rng.uniform(0.5, 3))


def burst(endpoint: str, rng: random.Random, count: int = 10) -> None:
    """``count`` subscribers connect at once; some read, all vanish after a few seconds."""
    subscribers = [VerdictSubscriber(endpoint) for _ in range(count)]
    until = time.monotonic() + 3
    while time.monotonic() < until:
        for subscriber in subscribers[: count // 2]:
            subscriber.poll(0.05)
    for subscriber in subscribers:
        subscriber.close()


def break_folder(folder: Path, seconds: float) -> None:
    """The reject folder replaced by a plain file for ``seconds`` (writes into it fail), then an empty folder
    again. Moved aside first, in one step, so that a record being written cannot keep it."""
    aside = folder.with_name(folder.name + ".broken")
    folder.rename(aside)
    folder.write_text("not a folder: the soak broke it on purpose\n")
    shutil.rmtree(aside, ignore_errors=True)
    time.sleep(seconds)
    folder.unlink()
    folder.mkdir()


FAULTS = ("engine_error", "sink_error", "subscriber_burst", "camera_unplug")


def inject_faults(
    station: subprocess.Popen, endpoint: str, rejects: Path, stop: threading.Event, injected: Counter
) -> None:
    """Every minute, 15 s apart: engine error, sink error, subscriber burst, camera unplug."""
    rng = random.Random(1)
    actions = (
        lambda: station.send_signal(signal.SIGUSR1),
        lambda: break_folder(rejects, 10),
        lambda: burst(endpoint, rng),
        lambda: station.send_signal(signal.SIGUSR2),
    )
    faults = list(zip(FAULTS, actions, strict=True))
    started, minute = time.monotonic(), 0
    while True:
        for i, (kind, fault) in enumerate(faults):
            if stop.wait(max(0.0, started + 60 * minute + 5 + 15 * i - time.monotonic())):
                return
            try:
                fault()
                injected[kind] += 1
            except Exception as exc:  # the soak goes on; the verdict counts what was injected
                print(f"minute {minute}: injecting {kind} failed: {exc}", file=sys.stderr, flush=True)
        minute += 1


def report(text: str, every: int = 10) -> str:
    """A soak's JSON lines as Markdown: the station every ``every`` minutes, then the end of the run."""
    *rows, end = [json.loads(line) for line in text.splitlines() if line.strip()]
    final = end.get("final_counters") or {}
    lines = [
        "| minute | RSS MB | threads | fds | frames | verdicts so far | errors | missing (steady subscriber) | "
        "latency p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["minute"] == 1 or row["minute"] % every == 0 or row is rows[-1]:
            errors = ", ".join(f"{k} {v}" for k, v in sorted((row.get("errors") or {}).items())) or "none"
            lines.append(
                f"| {row['minute']} | {row['rss_mb']} | {row['threads']} | {row['fds']} | {row['frames']} | "
                f"{row['verdicts']} | {errors} | {row['missing']} | {row.get('p50')} / {row.get('p99')} |"
            )
    rss = [row["rss_mb"] for row in rows]
    host = end.get("machine")
    lines += [
        "",
        *([f"{host['cpu']} ({host['cores']} cores), ending {host['date']}."] if host else []),
        f"End of the run ({end['minutes']} minutes): {final.get('frames')} frames, {final.get('verdicts')} verdicts "
        f"({final.get('pass')} pass, {final.get('fail')} fail, {final.get('error')} error: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(final.get('errors', {}).items())) or 'none'}); "
        f"{end['missing_on_steady_subscriber']} missing on the steady subscriber; RSS {min(rss)}–{max(rss)} MB; "
        f"exit status {end.get('exit_code')}; {'passed' if end['passed'] else 'FAILED'}.",
    ]
    if "injected" in end:
        injected = ", ".join(f"{k} {v}" for k, v in sorted(end["injected"].items()))
        lines.append(
            f"Faults injected: {injected}; every verdict in the JSON-lines record: "
            f"{end['json_lines'] == final.get('verdicts')}; reject-folder warnings {end['reject_write_warnings']}."
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", help="the station's artefact (required unless --report)")
    parser.add_argument("--images", help="folder the emulated camera streams (with --camera basler0)")
    parser.add_argument("--camera", default="basler0")
    parser.add_argument("--trigger", default="free")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--fps", type=float, help="with --trigger software: parts per second")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--faults", action="store_true", help="inject a fault of each kind every minute")
    parser.add_argument("--out", type=Path, help="JSON lines, one per minute, and the verdict (and a table: .md)")
    parser.add_argument("--report", type=Path, help="only write the table of a soak's JSON lines (next to it, .md)")
    args = parser.parse_args(argv)
    if args.report:
        args.report.with_suffix(".md").write_text(report(args.report.read_text()))
        return 0
    if not args.engine:
        parser.error("--engine is required (or --report FILE)")
    endpoint = free_endpoint()
    entry = "import sys; from edge.cli import run_main; sys.exit(run_main(sys.argv[1:]))"
    records = Path(tempfile.mkdtemp(prefix="soak-"))
    command = [
        sys.executable,
        *(["-m", "benchmarks.soak_station"] if args.faults else ["-c", entry]),
        "--engine",
        args.engine,
        "--camera",
        args.camera,
        "--trigger",
        args.trigger,
        "--publish",
        endpoint,
        "--wait-subscribers",
        "1",
        "--queue-size",
        "8",
    ]
    if args.images:
        command += ["--emulator-images", str(Path(args.images).resolve())]
    if args.threshold is not None:
        command += ["--threshold", str(args.threshold)]
    if args.fps:
        command += ["--fps", str(args.fps)]
    if args.faults:
        command += ["--rejects", str(records / "rejects"), "--jsonl", str(records / "verdicts.jsonl")]
    steady = VerdictSubscriber(endpoint)
    log = open(records / "station.log", "w")  # noqa: SIM115
    station = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    stop = threading.Event()
    churner = threading.Thread(target=churn, args=(endpoint, stop, random.Random(0)), daemon=True)
    churner.start()
    injected: Counter = Counter()
    if args.faults:
        faults = (station, endpoint, records / "rejects", stop, injected)
        threading.Thread(target=inject_faults, args=faults, daemon=True).start()
    rows, latencies, last_heartbeat, final = [], [], {}, None
    health_changes: Counter = Counter()
    started = time.monotonic()
    next_report = started + 60
    out = open(args.out, "w") if args.out else None  # noqa: SIM115
    try:
        while time.monotonic() - started < args.minutes * 60 and station.poll() is None:
            for kind, payload in steady.poll(0.5):
                if kind == "verdict" and payload["latency_ms"]["total"] is not None:
                    latencies.append(payload["latency_ms"]["total"])
                elif kind == "heartbeat":
                    last_heartbeat = payload["counters"]
                elif kind == "status" and "health" in payload:
                    health_changes[payload["health"]] += 1
            if time.monotonic() >= next_report:
                next_report += 60
                row = {
                    "minute": round((time.monotonic() - started) / 60),
                    **process_stats(station.pid),
                    **{k: last_heartbeat.get(k) for k in ("frames", "verdicts", "pass", "fail", "errors")},
                    "missing": steady.state.missing,
                    **({"injected": dict(injected), "health_changes": dict(health_changes)} if args.faults else {}),
                }
                if latencies:
                    row |= {f"p{q}": round(float(np.percentile(latencies, q)), 2) for q in (50, 99)}
                latencies.clear()
                rows.append(row)
                print(json.dumps(row), flush=True)
                if out:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
        station.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while final is None and time.monotonic() < deadline:
            for kind, payload in steady.poll(0.5):
                if kind == "status" and payload.get("final"):
                    final = payload["counters"]
        station.wait(timeout=30)
    finally:
        stop.set()
        steady.close()
        if station.poll() is None:
            station.kill()
        log.close()
    flat = len(rows) < 3 or (
        rows[-1]["rss_mb"] <= 1.1 * rows[1]["rss_mb"] + 20
        and rows[-1]["fds"] <= rows[1]["fds"] + 2
        and rows[-1]["threads"] <= rows[1]["threads"] + 2
    )
    lost = final is None or final["frames"] != final["verdicts"] or steady.state.missing > 0
    verdict = {
        "machine": machine(),
        "minutes": args.minutes,
        "final_counters": final,
        "missing_on_steady_subscriber": steady.state.missing,
        "resources_flat": flat,
        "exit_code": station.returncode,
    }
    if args.faults:
        recorded = len((records / "verdicts.jsonl").read_bytes().splitlines())
        engine_errors = (final or {}).get("errors", {}).get("engine_error", 0)
        verdict |= {
            "injected": dict(injected),
            "health_changes": dict(health_changes),
            "json_lines": recorded,
            "rejects_kept": len(list((records / "rejects").glob("*.png"))),
            # the reject store reports failed writes at most once a minute, and never to the line
            "reject_write_warnings": (records / "station.log").read_text().count("cannot save rejected image"),
        }
        lost = lost or recorded != final["verdicts"] or engine_errors < injected["engine_error"]
        lost = lost or health_changes["camera_lost"] < injected["camera_unplug"]
        lost = lost or min(injected[kind] for kind in FAULTS) < int(args.minutes)  # every kind, every minute
    verdict["passed"] = bool(flat and not lost)
    if not verdict["passed"]:
        print((records / "station.log").read_text()[-3000:], file=sys.stderr)
    shutil.rmtree(records, ignore_errors=True)
    print(json.dumps(verdict), flush=True)
    if out:
        out.write(json.dumps(verdict) + "\n")
        out.close()
        args.out.with_suffix(".md").write_text(report(args.out.read_text()))
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
