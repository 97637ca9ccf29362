"""The demo judges itself: too many errors or missing verdicts fail it, naming the parts and the fix; escapes are
named and counted as the model's misses."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from scripts.demo_summary import main, tally

NAMES = [f"{i:03d}_{'good' if i % 3 == 0 else 'crack'}.png" for i in range(90)]  # 30 good, 60 defective


def verdict(frame_id: int, kind: str, reason: str | None = None) -> dict:
    score = None if kind == "error" else (0.5 if kind == "fail" else 0.05)
    return {
        "frame_id": frame_id,
        "verdict": kind,
        "reason": reason,
        "score": score,
        "threshold": 0.15,
        "latency_ms": {"total": 30.0 + frame_id % 7},
    }


def perfect() -> list[dict]:
    return [verdict(i, "pass" if "good" in name else "fail") for i, name in enumerate(NAMES)]


def demo_folder(tmp_path: Path, verdicts: list[dict]) -> Path:
    (tmp_path / "camera").mkdir()
    for name in NAMES:
        (tmp_path / "camera" / name).write_bytes(b"")
    metrics = {"image_auroc": 1.0, "pixel_auroc": 0.99, "pro": 0.97, "images": 90}
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    (tmp_path / "verify.json").write_text(json.dumps({"max_score_difference": 1e-7, "verdicts_differing": 0}))
    (tmp_path / "calibration.json").write_text(json.dumps({"threshold": 0.15, "false_reject_interval": [0, 0.04]}))
    (tmp_path / "verdicts.jsonl").write_text("".join(json.dumps(v) + "\n" for v in verdicts))
    return tmp_path


def run(tmp_path: Path, verdicts: list[dict], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    folder = demo_folder(tmp_path, verdicts)
    status = main(["--out", str(folder), "--fps", "24.5", "--engine-rate", "35", "--started", str(time.time())])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_clean_run_passes_with_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status, out, err = run(tmp_path, perfect(), capsys)
    assert status == 0 and not err
    assert "defective parts rejected     60 of 60   100.0 %   60 failed, 0 error" in out
    assert "good parts passed            30 of 30   100.0 %" in out
    assert "escapes                       0 of 60     0.0 %" in out


def test_an_escape_is_named_and_counted_but_is_no_fault_of_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    verdicts = perfect()
    verdicts[4] = verdict(4, "pass")  # 004_crack.png passed
    status, out, err = run(tmp_path, verdicts, capsys)
    assert status == 0 and "DEMO FAILED" not in err
    assert "escapes                       1 of 60     1.7 %" in out
    assert "escapes: 004_crack.png (pass, score 0.0500 < 0.1500)" in out
    assert "1 defective part(s) passed" in out


def test_a_false_reject_is_listed_by_file_name_but_does_not_fail_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    verdicts = perfect()
    verdicts[3] = verdict(3, "fail")
    status, out, _ = run(tmp_path, verdicts, capsys)
    assert status == 0 and "false rejects: 003_good.png (fail, score 0.5000 >= 0.1500)" in out


def test_errors_over_one_percent_fail_the_demo_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    verdicts = perfect()
    for i in (1, 2):  # two defective parts overran: rejected, so no escape, but 2.2 % errors
        verdicts[i] = verdict(i, "error", "overrun")
    status, out, err = run(tmp_path, verdicts, capsys)
    assert status == 1
    assert "defective parts rejected     60 of 60   100.0 %   58 failed, 2 error" in out
    assert "errors by reason: overrun 2" in out
    assert "2 of 90 parts (2.2 %) got an error verdict" in err and "lower --fps" in err


def test_missing_verdicts_fail_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status, _, err = run(tmp_path, perfect()[:-3], capsys)
    assert status == 1 and "90 parts were streamed but 87 verdicts arrived" in err


def test_a_part_without_a_frame_counts_as_an_error_not_as_a_part() -> None:
    result = tally([*perfect()[:89], verdict(-1, "error", "trigger_overrun")], NAMES)
    assert result.unattributed == 1 and result.errors["trigger_overrun"] == 1 and result.defective + result.good == 89


def probe_report(opcua: int = 90, modbus: int = 90, gaps: int = 0) -> dict:
    def side(n: int) -> dict:
        ok = n == 90 and gaps == 0
        return {"verdicts": n, "pass": 30, "fail": n - 30, "error": 0, "gaps": gaps, "repeated": 0, "ok": ok}

    return {"opcua": side(opcua), "modbus": side(modbus)}


def test_the_plc_clients_counts_are_shown_and_a_short_count_fails_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "probe.json").write_text(json.dumps(probe_report()))
    status, out, err = run(tmp_path, perfect(), capsys)
    assert status == 0 and not err
    assert "OPC UA client                90 of 90     30 pass, 60 fail, 0 error; in order, no gaps" in out
    assert "Modbus PLC                   90 of 90" in out
    (tmp_path / "probe.json").write_text(json.dumps(probe_report(modbus=88, gaps=2)))
    for name in ("camera", "eval.json"):  # run() makes the folder again
        path = tmp_path / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    status, out, err = run(tmp_path, perfect(), capsys)
    assert status == 1 and "the Modbus PLC behind edge-bridge received 88 verdicts (gaps 2, repeats 0) of 90" in err


def test_a_probe_that_could_not_connect_fails_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "probe.json").write_text("")  # the probe exited 2 before printing
    status, _, err = run(tmp_path, perfect(), capsys)
    assert status == 1 and "the OPC UA client behind edge-bridge received nothing of 90" in err


def test_the_line_path_is_the_fastest_way_the_gate_let_through() -> None:
    from scripts.demo_path import Candidate, choose

    fp32 = Candidate("m.onnx, onnxruntime fp32", Path("m.onnx"), "onnxruntime", "fp32", 30.0)
    ov = Candidate("m.onnx, openvino fp32", Path("m.onnx"), "openvino", "fp32", 32.0)
    bf16 = Candidate("m.onnx, openvino bf16", Path("m.onnx"), "openvino", "bf16", 90.0, passed=True)
    int8 = Candidate("m-int8.onnx, openvino int8", Path("m-int8.onnx"), "openvino", "int8", 120.0, passed=False)
    best, why = choose([fp32, ov, bf16, int8])
    assert best is bf16 and "3.0× m.onnx, onnxruntime fp32" in why and "refused by the fidelity gate: m-int8" in why
    slow_bf16 = Candidate(bf16.name, bf16.artefact, "openvino", "bf16", 20.0, passed=True)
    best, _ = choose([fp32, slow_bf16])
    assert best is fp32
    best, why = choose([fp32, Candidate(bf16.name, bf16.artefact, "openvino", "bf16", 90.0, passed=False)])
    assert best is fp32 and "the fallback" in why
