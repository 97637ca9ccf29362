"""Ensemble: its members are named and checked up front, each is the network its own training gives with the same
seed, its map is the mean of the members' maps over their spreads on good images, and the FP16 export passes its
gate and agrees with the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edge.sidecar import FrameSpec, read_sidecar
from export.checkpoint import load_model
from export.data.batches import to_batch
from export.data.images import load_good_images
from export.errors import UserError
from export.exporter import export_artefact
from export.models.ensemble.network import parse_members
from export.models.registry import get_spec
from export.train import train
from tests.test_cli import run

QUICK = get_spec("ensemble").quick


@pytest.fixture(scope="module")
def checkpoint(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default members (TrustMAE, RB-AE's difference map, CMA-AE) trained for two steps each at 64 px."""
    out = tmp_path_factory.mktemp("ensemble") / "ensemble.pt"
    train("ensemble", brick_dataset, out, {**QUICK, "image_size": 64}, device="cpu", seed=0, progress=False)
    return out


def test_members_are_parsed_with_their_options_typed() -> None:
    members = parse_members("trustmae:iterations=3:adversarial=true, rb-ae:map=difference:sigma=4")
    assert members == [
        ("trustmae", {"iterations": 3, "adversarial": True}),
        ("rb-ae", {"map": "difference", "sigma": 4.0}),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trustmae", "at least two members"),
        ("trustmae,nope", "unknown model 'nope'"),
        ("trustmae,rb-ae:colour=red", "has no option colour"),
        ("trustmae:iterations=many,rb-ae", "iterations=many is not a int"),
        ("trustmae,rb-ae:map", "write option=value"),
        ("trustmae,ensemble", "cannot hold an ensemble"),
        ("trustmae,memseg", "normalise images differently"),
    ],
)
def test_bad_members_are_refused_before_any_training(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_members(text)


def test_edge_train_answers_bad_members_with_one_line(tmp_path: Path, brick_dataset: Path) -> None:
    result = run(
        "train_main",
        "--model",
        "ensemble",
        "--members",
        "trustmae,nope",
        "--data",
        str(brick_dataset),
        "--out",
        str(tmp_path / "e.pt"),
    )
    assert result.returncode == 2 and "unknown model 'nope'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "e.pt").exists()


def test_a_member_is_what_its_own_training_gives_with_the_same_seed(
    checkpoint: Path, brick_dataset: Path, tmp_path: Path
) -> None:
    model, _ = load_model(checkpoint)
    (name, values), *_ = parse_members(QUICK["members"])[2:]
    alone = tmp_path / "alone.pt"
    train(name, brick_dataset, alone, {**values, "image_size": 64}, device="cpu", seed=0, progress=False)
    member = model.members[2].state_dict()
    own = load_model(alone)[0].state_dict()
    assert member.keys() == own.keys() and all(torch.equal(member[k], own[k]) for k in own)


def test_members_trained_before_are_reused_only_with_the_same_options_and_seed(
    checkpoint: Path, brick_dataset: Path, tmp_path: Path
) -> None:
    alone = []
    for index, (name, values) in enumerate(parse_members(QUICK["members"])):
        alone.append(tmp_path / f"member{index}.pt")
        train(name, brick_dataset, alone[-1], {**values, "image_size": 64}, device="cpu", seed=0, progress=False)
    out = tmp_path / "reused.pt"
    summary = train(
        "ensemble", brick_dataset, out, {**QUICK, "image_size": 64}, device="cpu", seed=0, progress=False, reuse=alone
    )
    assert summary["reused"] == [str(p) for p in alone]
    assert summary["reused_seconds"] == pytest.approx(sum(s["seconds"] for s in summary["members"]), abs=0.2)
    reused, trained = load_model(out)[0].state_dict(), load_model(checkpoint)[0].state_dict()
    assert reused.keys() == trained.keys() and all(torch.equal(reused[k], trained[k]) for k in trained)

    # Another seed: nothing fits, every member is trained anew and the tool says which files it left.
    options = [f"--{k.replace('_', '-')}={v}" for k, v in {**QUICK, "image_size": 64}.items()]
    args = ["--model", "ensemble", *options, "--data", str(brick_dataset), "--out", str(tmp_path / "s1.pt")]
    result = run("train_main", *args, "--seed", "1", "--no-progress", "--reuse", *map(str, alone))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("was not taken") == 3 and json.loads(result.stdout)["reused"] == []


def test_the_map_is_the_mean_of_the_members_maps_over_their_spreads(checkpoint: Path, brick_dataset: Path) -> None:
    model, payload = load_model(checkpoint)
    assert [c["model"] for c in payload["config"]["member_configs"]] == ["trustmae", "rb-ae", "cma-ae"]
    assert payload["config"]["member_configs"][1]["config"]["map"] == "difference"
    images = load_good_images(brick_dataset, 64)
    with torch.no_grad():
        x = to_batch(images[: QUICK["spread_images"]], "cpu", model.normalisation)
        maps = [m.anomaly_map(x).double() for m in model.members]
        spreads = [m.std().item() for m in maps]
        expected = sum(m * spreads[0] / s for m, s in zip(maps, spreads, strict=True)) / 3
        assert np.allclose(model.spreads.numpy(), spreads, rtol=1e-5)
        assert torch.allclose(model.anomaly_map(x).double(), expected, rtol=1e-4, atol=1e-6)
        assert model.anomaly_map(x).min() >= 0  # the members' maps are distances, so is the mean
    assert model.score_kind == "distance" and model.score_head.k == round(600 / 128**2 * 64**2)


def test_fp16_export_passes_the_gate_and_agrees_with_the_checkpoint(
    checkpoint: Path, brick_dataset: Path, tmp_path: Path
) -> None:
    frame = FrameSpec(64, 64, "rgb8", max_batch=2)
    out = tmp_path / "ensemble.onnx"
    export_artefact(checkpoint, out, frame, "fp16")
    sidecar = read_sidecar(out)
    assert [m["model"] for m in sidecar.model_details["members"]] == ["trustmae", "rb-ae", "cma-ae"]
    model, _ = load_model(checkpoint)
    images = load_good_images(brick_dataset, 64)[:2]
    with torch.no_grad():
        x = to_batch(images, "cpu", model.normalisation)
        expected = model.score_head(model.anomaly_map(x)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    score, _ = session.run(None, {"frames": np.stack(images)})
    np.testing.assert_allclose(score, expected, rtol=2e-2)
