"""Heatmap grid figure: image choice, shared colour scale, and a readable PNG."""

import numpy as np
import pytest
from PIL import Image

from sla_jax.outputs import plots


def _synthetic(n: int = 6, n_defective: int = 4, size: int = 32):
    """``n`` grey images; the first ``n_defective`` have a square defect whose map is high inside it."""
    rng = np.random.default_rng(0)
    images = rng.integers(80, 160, size=(n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:n_defective, 6:14, 18:26] = 1
    maps = rng.uniform(0.0, 0.2, size=(n, size, size)).astype(np.float32) + masks
    titles = [f"{'crack' if masks[i].any() else 'good'} {i:03d}.png" for i in range(n)]
    return images, masks, maps, titles


def _assert_png(path, *, min_width: int = 300):
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width > min_width and img.height > 100
        img.verify()


def test_grid_favours_defects_and_is_deterministic(tmp_path):
    images, masks, maps, titles = _synthetic()
    kwargs = dict(titles=titles, max_images=4, columns=2, title="demo crack")
    first = plots.plot_heatmap_grid(images, masks, maps, path=str(tmp_path / "a.png"), **kwargs)
    second = plots.plot_heatmap_grid(images, masks, maps, path=str(tmp_path / "b.png"), **kwargs)
    assert first == second
    assert len(first) == 4 and first == sorted(set(first))
    defective = [i for i in first if masks[i].any()]
    assert len(defective) == 3
    _assert_png(tmp_path / "a.png")


def test_grid_shows_all_when_few_and_handles_all_good(tmp_path):
    images, masks, maps, titles = _synthetic()
    assert plots.plot_heatmap_grid(images, masks, maps, path=str(tmp_path / "few.png")) == list(range(6))
    _assert_png(tmp_path / "few.png")
    good = plots.plot_heatmap_grid(
        images, np.zeros_like(masks), maps, path=str(tmp_path / "good.png"), titles=titles, max_images=3
    )
    assert good == [0, 2, 4]
    _assert_png(tmp_path / "good.png")


def test_select_images_quota_and_edge_cases():
    masks = np.zeros((40, 2, 2), np.uint8)
    masks[10:] = 1
    chosen = plots.select_images(masks, max_images=16)
    assert len(chosen) == 16 and chosen == sorted(chosen)
    assert sum(not masks[i].any() for i in chosen) == 4
    assert plots.select_images(masks[:3], max_images=16) == [0, 1, 2]
    assert len(plots.select_images(masks[8:], max_images=16)) == 16
    with pytest.raises(ValueError):
        plots.select_images(masks, max_images=0)


def test_shared_scale_ignores_single_outlier():
    maps = np.linspace(0.0, 1.0, 10_000).reshape(4, 50, 50)
    maps[-1, -1, -1] = 1e6
    vmin, vmax = plots.shared_scale(maps)
    assert vmin == 0.0 and 0.98 < vmax < 1.0
    assert plots.shared_scale(np.ones((2, 3, 3)))[1] > 1.0


def test_numbers_read_the_same_everywhere():
    """Four significant digits in fixed notation (no '4e+04' beside '1.564e+04'), scientific far out."""
    assert [plots.number(v) for v in (40000, 15640.3, 0.01234, 1.0, 9.9996, 0)] == [
        "40,000",
        "15,640",
        "0.01234",
        "1.000",
        "10.00",
        "0",
    ]
    assert plots.number(1234567) == "1.235e+06" and plots.number(1e-5) == "1.000e-05"


def test_run_maps_and_predict_overlays_share_the_threshold_scale(tmp_path, monkeypatch):
    """heatmaps.png and predict's one-image overlays draw on the same scale, 0 to twice the threshold, with
    the threshold on the colour bar: the same map value has the same colour in both."""
    assert plots.threshold_scale(12.5) == (0.0, 25.0)
    assert plots.threshold_scale(None) is None and plots.threshold_scale(-1.0) is None
    seen = []
    real = plots.Normalize
    monkeypatch.setattr(plots, "Normalize", lambda *a: seen.append(a) or real(*a))
    images, masks, maps, _ = _synthetic(5)
    plots.plot_heatmap_grid(images, masks, maps, path=str(tmp_path / "grid.png"), threshold=0.8)
    plots.plot_heatmap_grid(
        images[:1],
        masks[:1],
        maps[:1] * 3,
        path=str(tmp_path / "one.png"),
        threshold=0.8,
        max_images=1,
        columns=1,
        score_label=plots.map_label("gde", patch_size=32),
    )
    assert seen == [(0.0, 1.6), (0.0, 1.6)]
    assert Image.open(tmp_path / "one.png").size[0] > 300  # the wrapped colour-bar label fits beside the image
