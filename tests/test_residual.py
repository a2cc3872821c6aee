"""The SPAM reference (lida_plugin.residual) on cases small enough to check by hand."""

import numpy as np
import pytest

from lida_plugin.residual import colour_spam_features, spam_dim, spam_features, transition

T = 3
N = 2 * T + 1


def idx(a: int, b: int, c: int) -> int:
    return ((a + T) * N + (b + T)) * N + (c + T)


def block(f: np.ndarray, channel: int, diagonal: bool) -> np.ndarray:
    start = (2 * channel + int(diagonal)) * N**3
    return f[start : start + N**3]


def test_shape_dtype_and_constant_image():
    f = spam_features(np.full((8, 8, 3), 77, np.uint8))
    assert f.shape == (2058,) == (spam_dim(),) and f.dtype == np.float32
    for ch in range(3):
        for diag in (False, True):
            b = block(f, ch, diag)
            assert b[idx(0, 0, 0)] == 1.0 and b.sum() == 1.0


def test_ramp_directions_and_clipping():
    x = np.tile(np.arange(6, dtype=np.uint8), (6, 1))  # I(y, x) = x
    img = np.stack([x, x * 10, np.zeros_like(x)], axis=-1)  # G: steps of 10, clipped to T
    f = spam_features(img)
    r = block(f, 0, False)
    # (0,1): D = -1; (0,-1): D = +1; vertical: D = 0 -> 1/4, 1/4, 1/2
    assert r[idx(-1, -1, -1)] == 0.25 and r[idx(1, 1, 1)] == 0.25 and r[idx(0, 0, 0)] == 0.5
    rd = block(f, 0, True)  # (1,1) and (-1,1): -1; (-1,-1) and (1,-1): +1
    assert rd[idx(-1, -1, -1)] == 0.5 and rd[idx(1, 1, 1)] == 0.5
    g = block(f, 1, False)
    assert g[idx(-3, -3, -3)] == 0.25 and g[idx(3, 3, 3)] == 0.25
    assert block(f, 2, False)[idx(0, 0, 0)] == 1.0


def test_conditional_probabilities_one_row():
    # one row 5 5 5 4 4 4 5: D(p) = I(p) - I(p+1) = 0 0 1 0 0 -1
    row = np.array([[5, 5, 5, 4, 4, 4, 5]], np.uint8)
    m = transition(row, 0, 1)
    assert m[idx(0, 0, 1)] == 0.5 and m[idx(0, 0, -1)] == 0.5  # (0,0) is followed by 1 once, -1 once
    assert m[idx(0, 1, 0)] == 1.0 and m[idx(1, 0, 0)] == 1.0 and m.sum() == 3.0  # one per (a, b) pair seen
    assert transition(row, 1, 0).sum() == 0  # one row: no vertical triplet at all
    img = np.repeat(row[..., None], 3, axis=2)
    s = block(spam_features(img), 0, False)
    expect = {(0, 0, 1): 0.125, (0, 0, -1): 0.375, (0, 1, 0): 0.25, (1, 0, 0): 0.5, (-1, 0, 0): 0.25, (0, -1, 0): 0.25}
    got = {k: float(s[idx(*k)]) for k in expect}
    assert got == expect and np.isclose(s.sum(), sum(expect.values()))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="H x W x 3"):
        spam_features(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        spam_features(np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize(
    "shape", [(64, 48, 3), (7, 9, 3), (3, 3, 3), (4, 5, 3), (1, 7, 3), (9, 2, 3), (33, 17, 3), (260, 257, 3)]
)  # 260 x 257: above the size where channels are counted one at a time
def test_fast_path_equals_the_eight_direction_definition(shape):
    from lida_plugin.residual import DIAGONAL, STRAIGHT

    rng = np.random.default_rng(sum(shape))
    for img in (rng.integers(0, 256, shape, dtype=np.uint8), (rng.integers(0, 5, shape) + 100).astype(np.uint8)):
        ref = np.concatenate([np.mean([transition(img[:, :, ch], dy, dx) for dy, dx in dirs], axis=0)
                              for ch in range(3) for dirs in (STRAIGHT, DIAGONAL)]).astype(np.float32)  # fmt: skip
        assert np.array_equal(spam_features(img), ref)


def test_colour_differences_by_hand():
    # R = G + 2 everywhere, B = G except one column that is G + 9: R - G is flat, B - G a spike
    rng = np.random.default_rng(5)
    g = rng.integers(50, 200, (6, 7)).astype(np.uint8)
    b = g.copy()
    b[:, 3] += 9
    img = np.stack([g + 2, g, b], axis=-1)
    f = colour_spam_features(img)
    assert f.shape == (3430,) == (spam_dim(colour=True),) and f.dtype == np.float32
    assert np.array_equal(f[:2058], spam_features(img))
    rg, bg = f[2058:2744], f[2744:]
    assert rg[idx(0, 0, 0)] == 1.0 and rg[N**3 + idx(0, 0, 0)] == 1.0  # flat R - G
    # B - G along a row: 0 0 0 9 0 0 0 -> D(p) = I(p) - I(p+1) = 0 0 -9 9 0 0, clipped to +-3
    m = transition(np.array([[0, 0, 0, 9, 0, 0, 0]], np.int16), 0, 1)
    assert m[idx(0, -3, 3)] == 1.0 and m[idx(-3, 3, 0)] == 1.0
    assert bg[idx(0, -3, 3)] > 0 and bg[idx(-3, 3, 0)] > 0  # the spike, seen along the rows
    with pytest.raises(ValueError, match="uint8"):
        colour_spam_features(img.astype(np.int16))


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "rgb"])
@pytest.mark.parametrize("T", [1, 3])
def test_crop_counter_gives_the_reference_statistics(colour, T):
    """CropCounter's joint counts, normalised the way the graph normalises them (each direction and its
    reverse, whose counts are the same windows read backwards), are the reference SPAM of every crop."""
    from lida_plugin.residual import COUNT_DIRECTIONS, CropCounter

    rng = np.random.default_rng(T)
    crops = rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
    crops[1] = (rng.integers(0, 4, (3, 16, 16)) + 120).astype(np.uint8)  # small steps: inside +-T
    crops[2] = 77  # flat
    crops[3, 0] = 255  # a saturated channel next to dark ones: colour differences far beyond T
    n = 2 * T + 1
    counter = CropCounter(T, colour)
    got = counter.counts(crops)
    assert got.shape == (5, len(COUNT_DIRECTIONS), 5 if colour else 3, n**3) and got.dtype == np.float32
    assert np.array_equal(counter.counts(crops[:2]), got[:2])  # work arrays reused for a smaller batch
    for i, crop in enumerate(crops):
        blocks = np.zeros((got.shape[2], 2, n**3))
        for j, blk in enumerate((0, 0, 1, 1)):  # COUNT_DIRECTIONS: two straight, then two diagonal
            fw = got[i, j].reshape(-1, n, n, n).astype(np.float64)
            for m in (fw, fw[:, ::-1, ::-1, ::-1].transpose(0, 3, 2, 1)):
                m = m.reshape(-1, n * n, n)
                den = m.sum(axis=2, keepdims=True)
                blocks[:, blk] += np.divide(m, den, out=np.zeros_like(m), where=den > 0).reshape(-1, n**3)
        ref = (colour_spam_features if colour else spam_features)(np.ascontiguousarray(crop.transpose(1, 2, 0)), T)
        assert np.abs((blocks / 4).reshape(-1) - ref).max() < 1e-6
    assert got[2].sum() > 0 and np.count_nonzero(got[2]) == got.shape[1] * got.shape[2]  # flat: one cell each


def test_crop_counter_refuses_what_is_not_a_crop_batch():
    from lida_plugin.residual import CropCounter

    with pytest.raises(ValueError, match=r"uint8 \[N, 3, S, S\]"):
        CropCounter().counts(np.zeros((2, 3, 8, 8), np.int16))
    with pytest.raises(ValueError, match=r"uint8 \[N, 3, S, S\]"):
        CropCounter().counts(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="T must be"):
        CropCounter(0)
    assert CropCounter().counts(np.zeros((0, 3, 8, 8), np.uint8)).shape == (0, 4, 5, 343)


def test_crop_counter_groups_large_batches_without_changing_a_count():
    """Codes are int16, so crops go in groups (19 for T = 3 with colour); a batch across several groups
    counts each crop as if it were alone, and an odd T takes the wide path."""
    from lida_plugin.residual import CropCounter

    rng = np.random.default_rng(11)
    crops = rng.integers(0, 256, (45, 3, 12, 12), dtype=np.uint8)
    counter = CropCounter()
    assert counter.group == 19 and counter.code_dtype == np.int16
    alone = np.concatenate([CropCounter().counts(c[None]) for c in crops])
    assert np.array_equal(counter.counts(crops), alone)
    wide = CropCounter(T=9, colour=True)  # 5 * 19^3 codes a crop do not fit int16
    assert wide.code_dtype == np.intp and wide.group == 1
    assert np.array_equal(wide.counts(crops[:3]), np.concatenate([wide.counts(c[None]) for c in crops[:3]]))
    # 4-pixel windows of a 12 x 12 crop: 12 * 9 along rows and along columns, 9 * 9 along each diagonal
    assert wide.counts(crops[:3]).sum() == 3 * 5 * (2 * 12 * 9 + 2 * 9 * 9)
