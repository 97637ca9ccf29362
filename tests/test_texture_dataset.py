"""Tests for export.data.texture_dataset: MVTec-style folders cut from scikit-image texture photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from export.data.texture_dataset import (
    DEFECT_KINDS,
    HELD_OUT,
    MARKER_NAME,
    SURFACES,
    TEXTURES,
    _random_crop,
    load_texture,
    make_texture_dataset,
    paste_defect,
)

SMALL = {"image_size": 64, "crop": 96, "train": 6, "test_good": 3, "test_per_defect": 2}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("texture") / "gravel"
    return out, make_texture_dataset("gravel", out, seed=3, **SMALL)


# ---------------------------------------------------------------------------------------------------------------
# Photos


@pytest.mark.parametrize("name", TEXTURES)
def test_load_texture_is_grey_uint8(name: str) -> None:
    photo = load_texture(name)
    assert photo.ndim == 2 and photo.dtype == np.uint8
    assert photo.shape == (512, 512)
    assert photo.std() > 10  # a real texture, not a flat image
    photo[:] = 0  # the caller's copy; the cache must stay intact
    assert load_texture(name).std() > 10


@pytest.mark.parametrize("name", HELD_OUT)
def test_held_out_photos_are_surface_only(name: str) -> None:
    photo = load_texture(name)
    crop = SURFACES[name].crop  # its default window fits twice: a train band above a test band
    assert photo.ndim == 2 and photo.shape[0] >= 2 * crop and photo.shape[1] >= crop
    # no black fundus corners, no large cell: the cut is textured surface throughout
    blocks = photo[: photo.shape[0] // 64 * 64, : photo.shape[1] // 64 * 64].reshape(photo.shape[0] // 64, 64, -1, 64)
    assert blocks.std(axis=(1, 3)).min() > 1.0


def test_reserved_photos_are_not_surfaces() -> None:
    assert not {"moon", "immunohistochemistry"} & set(SURFACES)
    assert set(TEXTURES) == {"brick", "grass", "gravel"} and not set(TEXTURES) & set(HELD_OUT)


def test_a_photo_file_of_ones_own(tmp_path: Path) -> None:
    photo = tmp_path / "surface.png"
    cv2.imwrite(str(photo), cv2.cvtColor(load_texture("gravel"), cv2.COLOR_GRAY2BGR))
    summary = make_texture_dataset(photo, tmp_path / "own", **SMALL)
    assert summary["texture"] == "surface" and summary["role"] == "user"
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        make_texture_dataset(tmp_path / "broken.png", tmp_path / "out", **SMALL)
    with pytest.raises(ValueError, match="not found"):
        make_texture_dataset(tmp_path / "missing.png", tmp_path / "out", **SMALL)


def test_a_subset_of_kinds_gives_the_same_images(tmp_path: Path) -> None:
    every = make_texture_dataset("cell", tmp_path / "all", **SMALL)
    some = make_texture_dataset("cell", tmp_path / "some", **{**SMALL, "defects": ["pit", "smear"]})
    assert some["defect_kinds"] == ["pit", "smear"] and every["defect_kinds"] == list(DEFECT_KINDS)
    for kind in ("pit", "smear"):
        for path in (tmp_path / "some" / "test" / kind).iterdir():
            assert path.read_bytes() == (tmp_path / "all" / "test" / kind / path.name).read_bytes()
    with pytest.raises(ValueError, match="distinct kinds"):
        make_texture_dataset("cell", tmp_path / "bad", **{**SMALL, "defects": ["dent"]})


def test_load_texture_unknown_name() -> None:
    with pytest.raises(ValueError, match="brick, grass, gravel"):
        load_texture("astronaut")


# ---------------------------------------------------------------------------------------------------------------
# Defects


def _crop(texture: str, size: int, seed: int) -> np.ndarray:
    return _random_crop(load_texture(texture), (307, 512), 192, size, np.random.default_rng(seed), turn=True)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("size", [64, 256])
def test_paste_defect_changes_only_the_mask(kind: str, size: int) -> None:
    for seed, texture in enumerate(TEXTURES * 3):
        clean = _crop(texture, size, seed)
        before = clean.copy()
        defective, mask = paste_defect(clean, kind, np.random.default_rng(seed), avoid_texture=texture)
        np.testing.assert_array_equal(clean, before)  # the input is not modified
        assert defective.shape == clean.shape and defective.dtype == np.uint8
        assert mask.shape == clean.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) == {0, 255}
        outside = mask == 0
        np.testing.assert_array_equal(defective[outside], clean[outside])
        inside = ~outside
        coverage = inside.mean()
        assert 0.002 <= coverage <= 0.05, (kind, texture, coverage)
        # Visible: the painted pixels differ clearly from the clean background around them.
        grey_clean = cv2.cvtColor(clean, cv2.COLOR_BGR2GRAY).astype(float)
        grey_defect = cv2.cvtColor(defective, cv2.COLOR_BGR2GRAY).astype(float)
        if kind == "smear":  # a smear changes the texture under it, not (much) its level
            assert np.abs(grey_defect[inside] - grey_clean[inside]).mean() >= 12, (kind, texture)
        else:
            ring = (cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0) & outside
            assert abs(grey_defect[inside].mean() - grey_clean[ring].mean()) >= 35, (kind, texture)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_paste_defect_on_a_grey_image(kind: str) -> None:
    clean = load_texture("brick")[300:428, 100:228].copy()
    defective, mask = paste_defect(clean, kind, np.random.default_rng(7))
    assert defective.shape == clean.shape and mask.shape == clean.shape
    assert mask.any()
    np.testing.assert_array_equal(defective[mask == 0], clean[mask == 0])


def test_paste_defect_is_deterministic() -> None:
    clean = _crop("grass", 128, 0)
    for kind in DEFECT_KINDS:
        a = paste_defect(clean, kind, np.random.default_rng(5))
        b = paste_defect(clean, kind, np.random.default_rng(5))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_paste_defect_rejects_bad_input() -> None:
    clean = _crop("brick", 64, 0)
    with pytest.raises(ValueError, match="scratch, crack, stain, shape"):
        paste_defect(clean, "perlin", np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        paste_defect(clean.astype(np.float32), "scratch", np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------------
# Crops


def test_crops_stay_inside_their_row_band() -> None:
    rows = np.repeat(np.arange(512, dtype=np.uint16)[:, None], 512, axis=1)
    photo = (rows // 2).astype(np.uint8)  # the value says which row (pair) a pixel came from
    rng = np.random.default_rng(0)
    for band in [(0, 307), (307, 512)]:
        for _ in range(50):
            window = _random_crop(photo, band, 96, 96, rng, turn=True)
            assert window.shape == (96, 96, 3)
            assert band[0] // 2 <= window.min() and window.max() <= (band[1] - 1) // 2


# ---------------------------------------------------------------------------------------------------------------
# Dataset folder


def test_layout_and_counts(small_dataset: tuple[Path, dict]) -> None:
    out, summary = small_dataset
    assert summary["texture"] == "gravel" and summary["image_size"] == 64 and summary["crop"] == 96
    expected = {"train/good": 6, "test/good": 3} | {f"test/{kind}": 2 for kind in DEFECT_KINDS}
    assert summary["counts"] == expected
    assert summary["path"] == str(out)
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(["good", *DEFECT_KINDS])
    assert sorted(p.name for p in (out / "ground_truth").iterdir()) == sorted(DEFECT_KINDS)
    for folder, n in expected.items():
        names = sorted(p.name for p in (out / folder).iterdir())
        assert names == [f"{i:03d}.png" for i in range(n)]
    (train_lo, train_hi), (test_lo, test_hi) = summary["train_rows"], summary["test_rows"]
    assert train_hi <= test_lo, "train and test windows must come from disjoint rows"
    assert train_hi - train_lo >= 96 and test_hi - test_lo >= 96
    json.dumps(summary)  # plain data


def test_images_are_readable_colour_of_the_requested_size(small_dataset: tuple[Path, dict]) -> None:
    out, _ = small_dataset
    images = sorted(out.glob("t*/*/*.png"))
    assert len(images) == 6 + 3 + 2 * len(DEFECT_KINDS)
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image is not None, path
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8, path


def test_every_defect_image_has_an_exact_mask(small_dataset: tuple[Path, dict]) -> None:
    out, _ = small_dataset
    for kind in DEFECT_KINDS:
        images = sorted((out / "test" / kind).iterdir())
        masks = sorted((out / "ground_truth" / kind).iterdir())
        assert [m.name for m in masks] == [f"{p.stem}_mask.png" for p in images]
        for image_path, mask_path in zip(images, masks, strict=True):
            image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask).tolist()) == {0, 255}, mask_path
            assert 0.002 <= (mask > 0).mean() <= 0.05, mask_path


def test_test_images_are_not_training_images(small_dataset: tuple[Path, dict]) -> None:
    out, _ = small_dataset
    train = {p.read_bytes() for p in (out / "train" / "good").iterdir()}
    assert not train & {p.read_bytes() for p in (out / "test").rglob("*.png")}


def test_same_seed_same_bytes(tmp_path: Path, small_dataset: tuple[Path, dict]) -> None:
    out, _ = small_dataset
    again = make_texture_dataset("gravel", tmp_path / "again", seed=3, **SMALL)
    assert _files(tmp_path / "again") == _files(out)
    assert again["counts"] == small_dataset[1]["counts"]
    other = tmp_path / "other"
    make_texture_dataset("gravel", other, seed=4, **SMALL)
    assert _files(other)["train/good/000.png"] != _files(out)["train/good/000.png"]


def test_fixed_orientation_cuts_the_same_windows_unturned(tmp_path: Path, small_dataset: tuple[Path, dict]) -> None:
    """``fixed`` gives the windows of ``any`` as they lie in the photo: each good image of ``any`` is one of the
    eight turns and mirror images of ``fixed``'s, and across the set more than one of them occurs."""
    turned, _ = small_dataset
    summary = make_texture_dataset("gravel", tmp_path / "fixed", seed=3, orientation="fixed", **SMALL)
    assert (
        summary["orientation"] == "fixed"
        and json.loads((turned / MARKER_NAME).read_text())["summary"]["orientation"] == "any"
    )
    seen = set()
    for name in [f"train/good/{i:03d}.png" for i in range(6)] + [f"test/good/{i:03d}.png" for i in range(3)]:
        fixed, any_way = (cv2.imread(str(root / name)) for root in (tmp_path / "fixed", turned))
        views = [np.rot90(fixed, k) for k in range(4)]
        views += [view[:, ::-1] for view in views]
        matches = [k for k, view in enumerate(views) if np.array_equal(view, any_way)]
        assert matches, name
        seen.add(matches[0])
    assert len(seen) > 1
    with pytest.raises(ValueError, match="orientation 'upright': one of any, fixed"):
        make_texture_dataset("gravel", tmp_path / "bad", orientation="upright", **SMALL)


def test_image_i_does_not_depend_on_the_counts(tmp_path: Path) -> None:
    make_texture_dataset("brick", tmp_path / "a", **SMALL)
    make_texture_dataset("brick", tmp_path / "b", **{**SMALL, "train": 2, "test_per_defect": 1})
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    for name in ["train/good/001.png", "test/crack/000.png", "ground_truth/shape/000_mask.png"]:
        assert a[name] == b[name]


@pytest.mark.parametrize("texture", TEXTURES)
def test_every_texture_builds(tmp_path: Path, texture: str) -> None:
    summary = make_texture_dataset(
        texture, tmp_path / texture, image_size=48, crop=64, train=1, test_good=1, test_per_defect=1
    )
    assert summary["texture"] == texture
    assert len(list((tmp_path / texture).rglob("*.png"))) == 2 + 2 * len(DEFECT_KINDS)


def test_unknown_texture(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="brick, grass, gravel"):
        make_texture_dataset("marble", tmp_path / "out", **SMALL)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("crop", 300, "crop must be an integer in"),
        ("crop", 8, "crop must be an integer in"),
        ("image_size", 8, "image_size must be an integer in"),
        ("image_size", 64.0, "image_size must be an integer in"),
        ("train", -1, "train must be an integer >= 0"),
        ("test_per_defect", -2, "test_per_defect must be"),
        ("seed", -1, "seed must be"),
    ],
)
def test_impossible_sizes(tmp_path: Path, option: str, value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        make_texture_dataset("brick", tmp_path / "out", **{**SMALL, option: value})
    assert not (tmp_path / "out").exists()


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "train" / "good").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "train" / "good" / "photo.png").write_bytes(b"not really a png")
    before = _files(out)
    with pytest.raises(FileExistsError, match="not empty"):
        make_texture_dataset("brick", out, **SMALL)
    assert _files(out) == before
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "notes.txt",
        "train",
        "train/good",
        "train/good/photo.png",
    ]


def test_refuses_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        make_texture_dataset("brick", path, **SMALL)
    assert path.read_text() == "x"


def test_writes_into_an_empty_folder(tmp_path: Path) -> None:
    make_texture_dataset("grass", tmp_path, **SMALL)
    assert (tmp_path / "train" / "good" / "005.png").is_file()


def test_rewrites_its_own_dataset_without_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    make_texture_dataset("brick", out, **SMALL)
    make_texture_dataset("brick", out, **{**SMALL, "train": 2, "test_per_defect": 1, "seed": 1})
    assert sorted(p.name for p in (out / "train" / "good").iterdir()) == ["000.png", "001.png"]
    assert sorted(p.name for p in (out / "ground_truth" / "stain").iterdir()) == ["000_mask.png"]
    fresh = tmp_path / "fresh"
    make_texture_dataset("brick", fresh, **{**SMALL, "train": 2, "test_per_defect": 1, "seed": 1})
    assert _files(out) == _files(fresh)


def test_refuses_its_own_dataset_with_user_files_added(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    make_texture_dataset("brick", out, **SMALL)
    (out / "test" / "good" / "mine.png").write_bytes(b"user data")
    before = _files(out)
    with pytest.raises(FileExistsError, match="mine.png"):
        make_texture_dataset("brick", out, **SMALL)
    assert _files(out) == before


def test_refuses_a_folder_with_a_broken_marker(tmp_path: Path) -> None:
    (tmp_path / MARKER_NAME).write_text("{not json")
    with pytest.raises(FileExistsError):
        make_texture_dataset("brick", tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == [MARKER_NAME]


def test_refuses_its_own_dataset_with_a_symlink_added(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    make_texture_dataset("brick", out, **SMALL)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("do not delete")
    (out / "test" / "linked").symlink_to(keep, target_is_directory=True)
    with pytest.raises(FileExistsError, match="linked"):
        make_texture_dataset("brick", out, **SMALL)
    assert (keep / "precious.txt").read_text() == "do not delete"
    assert (out / "test" / "linked").is_symlink()
