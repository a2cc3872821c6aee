import numpy as np
import pytest

from lida_plugin.errors import InputError
from lida_plugin.fingerprint import crop_grid, extract_crops, fingerprint, lowbits


def test_modes_match_the_paper_and_the_authors_code():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(lowbits(x), x & 7)
    assert np.array_equal(fingerprint(x, "scaled"), (x & 7).astype(np.uint16) * 36)
    assert np.array_equal(fingerprint(x, "binary"), np.where((x & 7) != 0, 255, 0))
    assert np.array_equal(fingerprint(x, "rgb"), x)
    assert fingerprint(x, "scaled").dtype == np.uint8
    with pytest.raises(ValueError):
        fingerprint(x, "nope")


def test_fingerprint_ignores_content_bits():
    rng = np.random.default_rng(0)
    low = rng.integers(0, 8, (8, 8, 3), dtype=np.uint8)
    a = low | (rng.integers(0, 32, low.shape, dtype=np.uint8) << 3)
    b = low | (rng.integers(0, 32, low.shape, dtype=np.uint8) << 3)
    assert not np.array_equal(a, b)
    for mode in ("scaled", "binary"):
        assert np.array_equal(fingerprint(a, mode), fingerprint(b, mode))


def test_fingerprint_does_not_modify_its_input():
    x = np.full((4, 4, 3), 13, np.uint8)
    fingerprint(x, "scaled")
    assert (x == 13).all()


@pytest.mark.parametrize(
    "h,w,size,count", [(512, 512, 64, 16), (256, 384, 64, 16), (100, 70, 64, 16), (512, 512, 64, 8), (64, 64, 64, 4)]
)
def test_crop_grid_is_aligned_inside_and_deterministic(h, w, size, count):
    grid = crop_grid(h, w, size, count, 8)
    assert grid == crop_grid(h, w, size, count, 8)
    assert 1 <= len(grid) <= count
    assert len(set(grid)) == len(grid)
    for y, x in grid:
        assert y % 8 == 0 and x % 8 == 0
        assert 0 <= y <= h - size and 0 <= x <= w - size


def test_crop_grid_spreads_over_the_image():
    grid = crop_grid(512, 512, 64, 16, 8)
    assert len(grid) == 16
    assert min(y for y, _ in grid) == 0 and max(y for y, _ in grid) == 448


def test_extract_crops_takes_pixels_unchanged():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    crops = extract_crops(img, 32, 4, 8)
    assert crops.shape == (4, 3, 32, 32) and crops.dtype == np.uint8
    for c, (y, x) in zip(crops, crop_grid(96, 128, 32, 4, 8), strict=True):
        assert np.array_equal(c.transpose(1, 2, 0), img[y : y + 32, x : x + 32])


def test_too_small_image_is_refused_with_a_clear_message():
    with pytest.raises(InputError, match=r"tiny.png: image is 20x30, smaller than the model's minimum of 32x32"):
        extract_crops(np.zeros((30, 20, 3), np.uint8), 32, 4, 8, name="tiny.png")
