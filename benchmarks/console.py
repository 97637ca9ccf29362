"""Does the console slow the line? ``edge-run`` on pylon's emulated camera with ``edge-console`` following it, once
with no browser tab open on the console and once with ``--tabs`` headless chromium tabs on the station's page
(live previews, counters, the reject gallery), the two taking turns for ``--rounds``. Reported per way: frames
judged per second, overruns, received → published p50/p99 (from every verdict), and the CPU the console and the
browser used (seconds of CPU per second, from ``/proc``).

    python -m benchmarks.console --engine runs/bench/patchcore.onnx --images runs/bench/camera --threshold 25.7 \\
        --fps 20 --seconds 60 --rounds 2 --tabs 5 --out benchmarks/results/console

``--console-nice 10`` runs the console as ``deploy/edge-console.service`` does; ``--browser-nice 19`` lets the
line and the console go first, as when the browsers run on the operators' machines rather than the station's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.cameras import ENTRY, free_block
from edge.bench import machine
from edge.client import VerdictSubscriber

CONSOLE = "import sys; from edge.console.cli import main; sys.exit(main(sys.argv[1:]))"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def browser_pids() -> list[int]:
    """The chromium processes running now."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"chromium" in (entry / "cmdline").read_bytes().split(b"\0")[0]:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def open_tabs(url: str, tabs: int):
    """A headless chromium with ``tabs`` tabs on ``url``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.get(url)
    for _ in range(tabs - 1):
        driver.switch_to.new_window("tab")
        driver.get(url)
    return driver


def run_way(args, endpoints: dict, url: str, console_pid: int, tabs: int) -> dict:
    frames = int(args.fps * args.seconds)
    driver = open_tabs(url, tabs) if tabs else None
    for pid in browser_pids() if driver else []:
        os.setpriority(os.PRIO_PROCESS, pid, args.browser_nice)
    subscriber = VerdictSubscriber(endpoints["publish"], "bench")
    command = [
        sys.executable, "-c", ENTRY, "--engine", str(args.engine), "--camera", "basler0", "--trigger", "software",
        "--fps", str(args.fps), "--emulator-images", str(Path(args.images).resolve()), "--max-frames", str(frames),
        "--publish", endpoints["publish"], "--snapshot", endpoints["snapshot"], "--control", endpoints["control"],
        "--rejects", str(args.work / "rejects"), "--threshold", str(args.threshold), "--station", "bench",
        "--wait-subscribers", "2",
    ]  # fmt: skip
    station = subprocess.Popen(command, stderr=subprocess.DEVNULL, env={**os.environ, "PYLON_CAMEMU": "1"})
    watched = browser_pids() if driver else []
    cpu = (cpu_seconds([console_pid]), cpu_seconds(watched))
    verdicts, started = [], None
    while True:
        for kind, payload in subscriber.poll(0.2):
            if kind == "verdict":
                started = started or time.monotonic()
                verdicts.append(payload)
            elif kind == "status" and payload.get("final"):
                station.wait()
        if station.poll() is not None and not subscriber.poll(0.3):
            break
    seconds = time.monotonic() - (started or time.monotonic())
    used = (cpu_seconds([console_pid]) - cpu[0], cpu_seconds(watched) - cpu[1])
    subscriber.close()
    if driver:
        driver.quit()
    judged = [v for v in verdicts if v["verdict"] != "error"]
    latency = np.array([(v["t_publish_ns"] - v["t_receive_ns"]) / 1e6 for v in judged]) if judged else np.zeros(1)
    return {
        "tabs": tabs,
        "frames": len(verdicts),
        "judged_per_s": round(len(judged) / seconds, 2) if seconds else None,
        "overruns": sum(v.get("reason") == "overrun" for v in verdicts),
        "p50_ms": round(float(np.percentile(latency, 50)), 2),
        "p99_ms": round(float(np.percentile(latency, 99)), 2),
        "console_cpu": round(used[0] / seconds, 3) if seconds else None,
        "browser_cpu": round(used[1] / seconds, 3) if seconds else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="images the emulated camera streams")
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--fps", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tabs", type=int, default=5)
    parser.add_argument("--console-nice", type=int, default=0, help="the console's niceness (its unit's: 10)")
    parser.add_argument("--browser-nice", type=int, default=0, help="the browser's niceness")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.out / "work"
    base = free_block(4)
    host, port = base.rsplit(":", 1)
    endpoints = {name: f"{host}:{int(port) + i}" for i, name in enumerate(("publish", "snapshot", "control"))}
    web = int(port) + 3
    console = subprocess.Popen(
        [
            sys.executable, "-c", CONSOLE, "--station", f"bench={endpoints['publish']}",
            "--snapshot", f"bench={endpoints['snapshot']}", "--control", f"bench={endpoints['control']}",
            "--rejects", f"bench={args.work / 'rejects'}", "--review", str(args.work / "review"),
            "--listen", f"127.0.0.1:{web}",
        ],
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.nice(args.console_nice),
    )  # fmt: skip
    url = f"http://127.0.0.1:{web}/#/station/bench"
    rows = []
    try:
        time.sleep(2)
        for round_ in range(args.rounds):
            for tabs in (0, args.tabs) if round_ % 2 == 0 else (args.tabs, 0):
                row = {"round": round_ + 1, **run_way(args, endpoints, url, console.pid, tabs)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        console.terminate()
        console.wait(timeout=20)
    shutil.rmtree(args.work, ignore_errors=True)
    result = {"machine": machine(), "fps": args.fps, "seconds": args.seconds, "engine": args.engine.name, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"edge-run at {args.fps:g} triggers/s for {args.seconds:g} s a way, edge-console following it (nice "
        f"{args.console_nice}, browser nice {args.browser_nice}); {machine()['cpu']}, {machine()['date']}",
        "",
        "| round | browser tabs on the console | judged/s | overruns | received → published p50 / p99 ms | "
        "console CPU | browser CPU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['tabs']} | {r['judged_per_s']} | {r['overruns']} | {r['p50_ms']} / {r['p99_ms']} | "
            f"{r['console_cpu']:.1%} | {r['browser_cpu']:.1%} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
