"""Loading MVTec-layout folders through the TFDS builder (``sla_jax.data``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from sla_jax import data

SIZE = 32


def _save(path: Path, image: Image.Image, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)


def _rgb(width: int, height: int, colour) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def _sixteen_bit() -> Image.Image:
    """Left half 65535, right half 0, as a 16-bit grayscale PNG image."""
    values = np.zeros((40, 40), np.uint16)
    values[:, :20] = 65535
    return Image.fromarray(values)


def _rotated_jpeg() -> bytes:
    """Stored 40×20 red | blue, EXIF orientation 6: displayed red on top."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def make_category(root: Path, name: str = "widget") -> Path:
    """A small category with every image kind the loader must handle."""
    cat = root / name
    good = cat / "train" / "good"
    _save(good / "a_rgb.png", _rgb(37, 53, (10, 120, 230)))
    _save(good / "b_rgb.JPG", _rgb(40, 30, (200, 200, 40)), quality=95)
    _save(good / "c_gray.png", Image.new("L", (53, 37), 100))
    _save(good / "d_rgba.png", Image.new("RGBA", (20, 20), (200, 50, 10, 0)))
    palette = Image.new("P", (24, 24), 1)
    palette.putpalette([0, 0, 0, 30, 160, 90] + [0] * 762)
    _save(good / "e_palette.png", palette)
    _save(good / "f_16bit.png", _sixteen_bit())
    (good / "g_rotated.jpg").write_bytes(_rotated_jpeg())
    _save(good / "h_cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=95)
    (good / "Thumbs.db").write_bytes(b"\x00not an image")
    (good / ".DS_Store").write_bytes(b"\x00\x01")
    _save(good / ".hidden.png", _rgb(8, 8, (0, 0, 0)))
    (good / "notes.txt").write_text("not an image")

    _save(cat / "test" / "good" / "ok.png", _rgb(37, 53, (10, 120, 230)))
    scratched = np.full((60, 40, 3), 50, np.uint8)
    scratched[:30, :20] = 250
    _save(cat / "test" / "scratch" / "s1.png", Image.fromarray(scratched))
    mask = np.zeros((60, 40), np.uint8)
    mask[:30, :20] = 255
    _save(cat / "ground_truth" / "scratch" / "s1_mask.png", Image.fromarray(mask))
    _save(cat / "test" / "scratch" / "s2.jpg", Image.new("L", (30, 30), 90), quality=95)
    rgb_mask = np.zeros((30, 30, 3), np.uint8)
    rgb_mask[20:, 20:, 1] = 200
    _save(cat / "ground_truth" / "scratch" / "s2_mask.png", Image.fromarray(rgb_mask))
    (cat / "ground_truth" / "scratch" / "Thumbs.db").write_bytes(b"\x00")
    return cat


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_category(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _load(root: Path, cache: Path, split: str, **options) -> data.Split:
    options.setdefault("category", "widget")
    return data.load_split(root, split=split, image_size=SIZE, cache_dir=cache, **options)


def _by_name(split: data.Split) -> dict[str, int]:
    return {Path(p).name: i for i, p in enumerate(split.paths)}


def test_train_split_shapes_and_metadata(root, cache):
    train = _load(root, cache, "train")
    n = 8
    assert train.images.shape == (n, SIZE, SIZE, 3) and train.images.dtype == np.uint8
    assert train.masks.shape == (n, SIZE, SIZE) and train.masks.dtype == np.uint8
    assert train.labels.dtype == np.int32 and not train.labels.any()
    assert not train.masks.any()
    assert train.defect_types == ("good",) * n
    names = [Path(p).name for p in train.paths]
    assert names == sorted(names)
    assert names[0] == "a_rgb.png" and "Thumbs.db" not in names and ".hidden.png" not in names
    assert all(Path(p).is_file() for p in train.paths)


def test_decoding_of_modes(root, cache):
    train = _load(root, cache, "train")
    images = {name: train.images[i].astype(int) for name, i in _by_name(train).items()}
    np.testing.assert_allclose(images["a_rgb.png"], np.broadcast_to([10, 120, 230], (SIZE, SIZE, 3)), atol=1)
    assert np.abs(images["b_rgb.JPG"] - [200, 200, 40]).max() <= 6
    gray = images["c_gray.png"]
    assert (gray == 100).all(), "grayscale replicated to three equal channels"
    np.testing.assert_array_equal(images["d_rgba.png"], np.broadcast_to([200, 50, 10], (SIZE, SIZE, 3)))
    np.testing.assert_array_equal(images["e_palette.png"], np.broadcast_to([30, 160, 90], (SIZE, SIZE, 3)))
    sixteen = images["f_16bit.png"]
    assert (sixteen[:, :14] == 255).all() and (sixteen[:, -14:] == 0).all()
    rotated = images["g_rotated.jpg"]
    assert rotated[: SIZE // 2 - 2, :, 0].min() > 200 and rotated[: SIZE // 2 - 2, :, 2].max() < 60
    assert rotated[SIZE // 2 + 2 :, :, 2].min() > 200 and rotated[SIZE // 2 + 2 :, :, 0].max() < 60
    assert np.abs(images["h_cmyk.jpg"] - [255, 0, 0]).max() <= 8


def test_test_split_labels_and_masks(root, cache):
    test = _load(root, cache, "test")
    assert test.images.shape == (3, SIZE, SIZE, 3)
    assert test.labels.tolist() == [0, 1, 1]
    assert test.defect_types == ("good", "scratch", "scratch")
    assert set(np.unique(test.masks)) <= {0, 1}
    assert not test.masks[0].any()
    s1 = test.masks[_by_name(test)["s1.png"]]
    half = SIZE // 2
    assert s1[: half - 1, : half - 1].all() and not s1[half + 1 :].any() and not s1[:, half + 1 :].any()
    bright = test.images[_by_name(test)["s1.png"]].mean(-1) > 150
    assert (bright == s1.astype(bool)).mean() > 0.95
    s2 = test.masks[_by_name(test)["s2.jpg"]]
    corner = SIZE * 2 // 3
    assert s2[corner + 1 :, corner + 1 :].all() and s2.sum() == s2[corner - 1 :, corner - 1 :].sum()


def test_decode_mask_stays_binary_for_thin_and_soft_masks():
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, 10:90] = 255
    mask[10, :] = 255
    mask[80:90, 10:20] = 100
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, "PNG")
    small = data.decode_mask(buffer.getvalue(), size=SIZE)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1}
    assert small[14:18, 5:27].all() and not small[26:29, 3:6].any()
    assert not data.decode_mask(b"", size=SIZE).any()


def test_predefined_mvtec_config(tmp_path, cache):
    make_category(tmp_path / "mvtec", "bottle")
    builder = data.prepare(tmp_path / "mvtec", category="bottle", cache_dir=cache)
    assert builder.builder_config is data.MVTecAD.builder_configs["bottle"]
    assert builder.info.full_name == "mvtec_ad/bottle/1.0.0"
    assert set(data.MVTecAD.builder_configs) == set(data.MVTEC_CATEGORIES)
    test = data.load_split(tmp_path / "mvtec", category="bottle", split="test", image_size=SIZE, cache_dir=cache)
    assert test.labels.tolist() == [0, 1, 1]


def test_builder_used_directly(tmp_path):
    make_category(tmp_path / "mvtec", "bottle")
    builder = data.MVTecAD(config="bottle", data_dir=tmp_path / "tfds", file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "mvtec")))
    sources = builder.as_data_source()
    assert len(sources["train"]) == 8 and len(sources["test"]) == 3
    record = sources["test"][1]
    assert record["path"] == b"test/scratch/s1.png" and record["defect_type"] == b"scratch"
    assert record["label"] == 1 and record["image"][:4] == b"\x89PNG" and record["mask"][:4] == b"\x89PNG"
    assert sources["test"][0]["mask"] == b""


def test_custom_category_gets_its_own_config(root, cache):
    builder = data.prepare(root, category="widget", cache_dir=cache)
    assert builder.builder_config.name == "widget" and builder.builder_config.category == "widget"
    assert "widget" not in data.MVTecAD.builder_configs


def _prepared_files(cache: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in cache.rglob("*.array_record*")}


def test_cache_reused_and_refreshed(root, cache):
    first = _load(root, cache, "train")
    prepared = _prepared_files(cache)
    assert prepared
    second = _load(root, cache, "train")
    assert _prepared_files(cache) == prepared
    np.testing.assert_array_equal(first.images, second.images)

    _save(root / "widget" / "train" / "good" / "z_new.png", _rgb(10, 10, (1, 2, 3)))
    third = _load(root, cache, "train")
    assert len(third.labels) == len(first.labels) + 1
    refreshed = _prepared_files(cache)
    assert refreshed and not set(refreshed) & set(prepared), "old preparation replaced"


def test_image_level_only_without_masks(root, cache):
    folder = root / "widget" / "test" / "dent"
    _save(folder / "d1.png", _rgb(20, 20, (0, 0, 0)))
    test = _load(root, cache, "test", require_masks=False)
    assert test.defect_types.count("dent") == 1
    assert test.labels[test.defect_types.index("dent")] == 1
    assert not test.masks[test.defect_types.index("dent")].any()


def _error(root: Path, cache: Path, **options) -> str:
    with pytest.raises(data.DataError) as info:
        _load(root, cache, options.pop("split", "train"), **options)
    return str(info.value)


def test_error_missing_root(tmp_path, cache):
    missing = tmp_path / "nowhere"
    assert str(missing) in _error(missing, cache)


def test_error_missing_category(root, cache):
    message = _error(root, cache, category="gadget")
    assert str(root / "gadget") in message and "widget" in message


def test_error_train_good_missing_or_empty(root, cache):
    good = root / "widget" / "train" / "good"
    for p in good.iterdir():
        if p.suffix.lower() in data.IMAGE_SUFFIXES and not p.name.startswith("."):
            p.unlink()
    assert str(good) in _error(root, cache)
    for p in good.iterdir():
        p.unlink()
    good.rmdir()
    assert str(good) in _error(root, cache)


def test_error_missing_test_folder(root, cache):
    test = root / "widget" / "test"
    for path in sorted(test.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    test.rmdir()
    assert str(test) in _error(root, cache)


def test_error_defect_type_without_masks(root, cache):
    _save(root / "widget" / "test" / "dent" / "d1.png", _rgb(20, 20, (0, 0, 0)))
    message = _error(root, cache, split="test")
    assert "'dent'" in message
    assert str(root / "widget" / "ground_truth" / "dent") in message
    assert "--config.data.require_masks=False" in message


def test_error_missing_mask_file(root, cache):
    _save(root / "widget" / "test" / "scratch" / "s3.png", _rgb(20, 20, (0, 0, 0)))
    message = _error(root, cache, split="test")
    assert str(root / "widget" / "test" / "scratch" / "s3.png") in message
    assert str(root / "widget" / "ground_truth" / "scratch" / "s3_mask.png") in message


def test_error_undecodable_file(root, cache):
    broken = root / "widget" / "train" / "good" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    assert str(broken) in _error(root, cache)


@pytest.mark.parametrize(
    "dataset, total, defective",
    [
        ("magnetic_tile/magnetic_tile", 1344, 392),
        ("kolektorsdd/kolektorsdd", 400, 52),
        ("aws_cookies/cookie", 77, 32),
    ],
)
def test_real_data(dataset, total, defective, tmp_path_factory, shared_data):
    folder = shared_data / dataset
    root, category = folder.parent, folder.name
    cache = tmp_path_factory.mktemp("real_cache")
    splits = [data.load_split(root, category=category, split=s, image_size=SIZE, cache_dir=cache) for s in data.SPLITS]
    train, test = splits
    assert len(train.labels) + len(test.labels) == total
    assert int(test.labels.sum()) == defective and not train.labels.any()
    assert train.images.shape[1:] == (SIZE, SIZE, 3) and test.masks.shape[1:] == (SIZE, SIZE)
    assert test.masks[test.labels == 0].sum() == 0
    with_mask_pixels = int((test.masks.reshape(len(test.labels), -1).max(1) > 0).sum())
    assert 0 < with_mask_pixels <= defective, "thin defects may vanish at 32 px, not all of them"
    assert set(test.defect_types) - {"good"} == {p.name for p in (folder / "ground_truth").iterdir() if p.is_dir()}
