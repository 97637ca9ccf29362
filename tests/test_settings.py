"""Settings are written once: the flags of edge-run and edge-bridge are made from the settings dataclasses, with
each default named in the help, and a TOML file's values stand unless a flag is given."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge.cli import run_main
from edge.config import StationConfig


def help_text(main, capsys) -> str:
    with pytest.raises(SystemExit):
        main(["--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_every_station_setting_is_a_flag_with_its_help_and_default(capsys) -> None:
    shown = help_text(run_main, capsys)
    for spec in dataclasses.fields(StationConfig):
        flag = f"--{spec.name.replace('_', '-')}"
        assert flag in shown, flag
        assert " ".join(spec.metadata["help"].split()) in shown, spec.name
        if spec.default not in (None, "", False, ()):
            assert f"(default {spec.default})" in shown, spec.name
    assert "{free,software,line1,line2,line3,line4}" in shown and "onnxruntime" in shown


def test_a_config_file_stands_unless_a_flag_is_given(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "station.toml"
    path.write_text('engine = "e.onnx"\ncamera = "basler0"\nqueue_size = 16\nheatmaps = true\n')
    seen = {}

    def fake_run(config: StationConfig) -> int:
        seen["config"] = config
        return 0

    monkeypatch.setattr("edge.run.run_station", fake_run)
    assert run_main(["--config", str(path), "--stall-s", "2.5"]) == 0
    config = seen["config"]
    assert (config.queue_size, config.heatmaps, config.stall_s, config.trigger) == (16, True, 2.5, "free")
    assert run_main(["--config", str(path), "--queue-size", "4"]) == 0
    assert seen["config"].queue_size == 4 and seen["config"].heatmaps is True


def test_every_bridge_setting_is_a_flag_and_a_key(capsys) -> None:
    pytest.importorskip("prometheus_client", reason="the bridge extra is not installed")
    from edge.bridge.cli import main
    from edge.bridge.config import BridgeConfig, ConfigError, setting_fields

    shown = help_text(main, capsys)
    for key, (_, spec) in setting_fields().items():
        assert f"--{key.replace('_', '-')}" in shown and " ".join(spec.metadata["help"].split()) in shown, key
    with pytest.raises(
        ConfigError, match="known: metrics, offline_heartbeats, modbus, modbus_queue, mqtt, mqtt_prefix, mqtt_format"
    ):
        BridgeConfig.load(None, {"modbus_size": 3}, [])
