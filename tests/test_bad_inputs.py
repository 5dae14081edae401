"""Bad input files: each gets a clear error naming the file, or with ``skip_bad_files`` is left out and listed."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sla_jax import data

SIZE = 32


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _noise(seed: int, size=(48, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(side: int = 30_000) -> bytes:
    """A valid PNG header declaring ``side``² pixels (over PIL's decompression-bomb limit) and no pixel data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def category(root: Path, name: str = "part") -> Path:
    """A clean, small category: 3 train images, a good and a defective test image with its mask."""
    cat = root / name
    for folder in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (cat / folder).mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (cat / "train" / "good" / f"{i:03d}.png").write_bytes(_png(_noise(i)))
    (cat / "test" / "good" / "000.png").write_bytes(_png(_noise(10)))
    (cat / "test" / "crack" / "000.png").write_bytes(_png(_noise(11)))
    mask = np.zeros((48, 40), np.uint8)
    mask[5:20, 10:30] = 255
    (cat / "ground_truth" / "crack" / "000_mask.png").write_bytes(_png(Image.fromarray(mask)))
    return cat


@pytest.fixture
def cat(tmp_path: Path) -> Path:
    return category(tmp_path / "data")


def _load(cat: Path, split: str, tmp_path: Path, **options) -> data.Split:
    return data.load_split(
        cat.parent, category=cat.name, split=split, image_size=SIZE, cache_dir=tmp_path / "cache", **options
    )


def _error(cat: Path, split: str, tmp_path: Path, **options) -> str:
    with pytest.raises(data.DataError) as info:
        _load(cat, split, tmp_path, **options)
    return str(info.value)


def _truncated(fmt: str) -> bytes:
    whole = _encoded(_noise(5, (64, 64)), fmt)
    return whole[: len(whole) // 2]


BAD_FILES = {
    "zero_byte.png": (b"", "empty (0 bytes)"),
    "truncated.png": (_truncated("PNG"), "Cannot decode image file"),
    "truncated.jpg": (_truncated("JPEG"), "Cannot decode image file"),
    "bomb.png": (bomb_png(), "too large to decode safely"),
    "text_named_png.png": (b"hello, I am not a PNG", "Cannot decode image file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_image_file_is_named_and_can_be_skipped(name, cat, tmp_path):
    content, reason = BAD_FILES[name]
    bad = cat / "train" / "good" / name
    bad.write_bytes(content)
    message = _error(cat, "train", tmp_path)
    assert str(bad) in message and reason in message
    assert "skip_bad_files=True" in message
    train = _load(cat, "train", tmp_path, skip_bad_files=True)
    assert len(train.images) == 3 and str(bad) not in train.paths
    assert len(train.skipped) == 1 and train.skipped[0].startswith(str(bad))


def test_non_image_files_and_hidden_files_are_ignored(cat, tmp_path):
    good = cat / "train" / "good"
    (good / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 not an image")
    (good / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (good / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (good / "readme.txt").write_text("notes")
    train = _load(cat, "train", tmp_path)
    assert [Path(p).name for p in train.paths] == ["000.png", "001.png", "002.png"] and not train.skipped


def test_la_rgba_palette_cmyk_and_16_bit_images_decode_to_rgb():
    la = data.decode_image(_png(Image.new("LA", (20, 10), (90, 0))), size=SIZE)
    assert (la == 90).all() and la.shape == (SIZE, SIZE, 3)
    rgba = data.decode_image(_png(Image.new("RGBA", (20, 10), (10, 20, 30, 128))), size=SIZE)
    assert (rgba == [10, 20, 30]).all()
    palette = Image.new("P", (8, 8), 2)
    palette.putpalette([0, 0, 0, 0, 0, 0, 40, 50, 60] + [0] * 759)
    assert (data.decode_image(_png(palette), size=SIZE) == [40, 50, 60]).all()
    cmyk = data.decode_image(_encoded(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"), size=SIZE)
    assert cmyk.min() >= 250
    sixteen = data.decode_image(_png(Image.fromarray(np.full((8, 8), 32768, np.uint16))), size=SIZE)
    assert (sixteen == 128).all()


def test_mask_of_another_size_than_its_image(cat, tmp_path):
    mask_path = cat / "ground_truth" / "crack" / "000_mask.png"
    mask_path.write_bytes(_png(Image.new("L", (20, 20), 255)))
    message = _error(cat, "test", tmp_path)
    assert str(mask_path) in message and "20×20" in message and "40×48" in message
    test = _load(cat, "test", tmp_path, skip_bad_files=True)
    assert test.defect_types == ("good",) and str(mask_path) in test.skipped[0]


def test_non_binary_mask_is_thresholded_and_counted(cat, tmp_path):
    mask = np.zeros((48, 40), np.uint8)
    mask[:, :24] = 255
    mask[:, 24:30] = 100  # antialiased edge
    (cat / "ground_truth" / "crack" / "000_mask.png").write_bytes(_png(Image.fromarray(mask)))
    test = _load(cat, "test", tmp_path)
    assert len(test.nonbinary_masks) == 1 and test.nonbinary_masks[0].endswith("crack/000.png")
    crack = test.masks[test.defect_types.index("crack")]
    assert set(np.unique(crack)) == {0, 1} and crack[:, :15].all() and not crack[:, 21:].any()


def test_mask_that_would_mark_nothing_is_an_error(cat, tmp_path):
    mask_path = cat / "ground_truth" / "crack" / "000_mask.png"
    mask = np.zeros((48, 40), np.uint8)
    mask[5:20, 10:30] = 1  # a 0/1 label image instead of 0/255
    mask_path.write_bytes(_png(Image.fromarray(mask)))
    message = _error(cat, "test", tmp_path)
    assert str(mask_path) in message and "values up to 1" in message and "255" in message


def test_mask_without_image(cat, tmp_path):
    orphan = cat / "ground_truth" / "crack" / "007_mask.png"
    orphan.write_bytes(_png(Image.new("L", (40, 48), 255)))
    message = _error(cat, "test", tmp_path)
    assert str(orphan) in message and "no image" in message
    test = _load(cat, "test", tmp_path, skip_bad_files=True)
    assert len(test.images) == 2 and test.skipped == (f"{orphan}: mask without an image",)


def test_image_without_mask(cat, tmp_path):
    lonely = cat / "test" / "crack" / "001.png"
    lonely.write_bytes(_png(_noise(3)))
    message = _error(cat, "test", tmp_path)
    assert str(lonely) in message and "001_mask.png" in message and "require_masks=False" in message


def test_paths_with_spaces_and_non_ascii_characters(tmp_path):
    cat = category(tmp_path / "my data ünïcødé", name="Prüfteil 7 (Öl)")
    (cat / "train" / "good" / "bild mit leerzeichen é.png").write_bytes(_png(_noise(20)))
    train = _load(cat, "train", tmp_path)
    test = _load(cat, "test", tmp_path)
    assert len(train.images) == 4 and len(test.images) == 2
    assert any("bild mit leerzeichen é.png" in p for p in train.paths)


def test_symlink_loop_and_broken_link(cat, tmp_path):
    good = cat / "train" / "good"
    os.symlink(good / "loop_b.png", good / "loop_a.png")
    os.symlink(good / "loop_a.png", good / "loop_b.png")
    message = _error(cat, "train", tmp_path)
    assert str(good / "loop_a.png") in message and "symbolic link loop" in message
    train = _load(cat, "train", tmp_path, skip_bad_files=True)
    assert len(train.images) == 3 and len(train.skipped) == 2
    (good / "loop_a.png").unlink()
    (good / "loop_b.png").unlink()
    os.symlink(good / "gone.png", good / "dangling.png")
    assert "dangling.png" in _error(cat, "train", tmp_path)


def test_directory_symlink_loop_in_the_tree_does_not_hang(cat, tmp_path):
    os.symlink(cat / "train", cat / "train" / "good" / "again")
    os.symlink(cat, cat / "test" / "good" / "up")
    assert len(_load(cat, "train", tmp_path).images) == 3


def test_all_training_images_bad_is_an_error_even_when_skipping(cat, tmp_path):
    for path in (cat / "train" / "good").iterdir():
        path.write_bytes(b"broken")
    message = _error(cat, "train", tmp_path, skip_bad_files=True)
    assert "No usable image left" in message and str(cat) in message


def test_empty_train_good_and_missing_test_folder(cat, tmp_path):
    for path in (cat / "train" / "good").iterdir():
        path.unlink()
    assert str(cat / "train" / "good") in _error(cat, "train", tmp_path)
    category(cat.parent, name="other")
    (cat.parent / "other" / "test").rename(cat.parent / "other" / "tests")
    assert str(cat.parent / "other" / "test") in _error(cat.parent / "other", "train", tmp_path)


MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr")
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")


def _check_decoded(content: bytes) -> None:
    """Decoding gives a SIZE×SIZE×3 uint8 array or a DataError naming the file; nothing else escapes."""
    try:
        image = data.decode_image(content, size=SIZE, name="fuzz.bin")
    except data.DataError as error:
        assert "fuzz.bin" in str(error)
        return
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    try:
        mask = data.decode_mask(content, size=SIZE, name="fuzz.bin")
    except data.DataError as error:
        assert "fuzz.bin" in str(error)
        return
    assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(content):
    _check_decoded(content)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(FORMATS),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
)
def test_fuzz_random_modes_formats_and_corruptions(mode, fmt, width, height, seed, cut, flips):
    """Random images of every mode, saved in every format PIL will write them in, then cut short and with
    random bytes overwritten."""
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    try:
        content = _encoded(Image.fromarray(rgb).convert(mode), fmt)
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format
    _check_decoded(content)
    corrupted = bytearray(content[: max(1, int(len(content) * cut))] if cut < 0.9 else content)
    for where, value in flips:
        corrupted[int(where * (len(corrupted) - 1))] = value
    _check_decoded(bytes(corrupted))
