import numpy as np
import pytest
from PIL import Image

from difforge.data.builtin import CLASSES, generate_arrays, make_image, write_dataset


def test_same_seed_same_images_other_seed_other_images():
    a, la, names = generate_arrays(size=32, per_class=3, seed=7)
    b, lb, _ = generate_arrays(size=32, per_class=3, seed=7)
    c, _, _ = generate_arrays(size=32, per_class=3, seed=8)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert names == list(CLASSES)
    assert not np.array_equal(a, c)
    # every image differs from every other one
    flat = a.reshape(len(a), -1)
    assert len({row.tobytes() for row in flat}) == len(a)


def test_image_does_not_depend_on_how_many_are_made():
    small, _, _ = generate_arrays(size=32, per_class=2, seed=3)
    large, labels, _ = generate_arrays(size=32, per_class=5, seed=3)
    for c in range(len(CLASSES)):
        assert np.array_equal(small[2 * c : 2 * c + 2], large[5 * c : 5 * c + 2])
    one = make_image(2, 32, np.random.default_rng([3, 2, 1]))
    assert np.array_equal(one, large[5 * 2 + 1])


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_dtypes(size, channels):
    images, labels, names = generate_arrays(size=size, per_class=2, seed=0, channels=channels)
    assert images.shape == (2 * len(CLASSES), size, size, channels) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [c for c in range(len(CLASSES)) for _ in range(2)]
    assert images.std() > 10  # not blank


def test_grayscale_is_luma_of_colour():
    rgb = make_image(3, 32, np.random.default_rng([0, 3, 0]), channels=3).astype(float)
    gray = make_image(3, 32, np.random.default_rng([0, 3, 0]), channels=1)[..., 0].astype(float)
    assert np.abs(rgb @ [0.299, 0.587, 0.114] - gray).mean() < 3.0  # noise differs by <1 level


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        make_image(len(CLASSES), 32, rng)
    with pytest.raises(ValueError):
        make_image(0, 32, rng, channels=2)


def test_write_dataset_layout(tmp_path):
    out = write_dataset(tmp_path / "ds", size=32, per_class=2, seed=1, channels=3, progress=False)
    assert out == tmp_path / "ds"
    assert sorted(p.name for p in out.iterdir()) == sorted(CLASSES)
    images, _, _ = generate_arrays(size=32, per_class=2, seed=1)
    for c, name in enumerate(CLASSES):
        files = sorted((out / name).iterdir())
        assert [f.name for f in files] == [f"{name}_00000.png", f"{name}_00001.png"]
        for i, f in enumerate(files):
            with Image.open(f) as im:
                assert im.mode == "RGB" and im.size == (32, 32)
                assert np.array_equal(np.asarray(im), images[2 * c + i])
    assert not [p for p in out.rglob(".*")]  # no temp files left


def test_write_dataset_grayscale(tmp_path):
    out = write_dataset(tmp_path, size=32, per_class=1, channels=1, progress=False)
    with Image.open(out / "crack" / "crack_00000.png") as im:
        assert im.mode == "L"


def _features(images):
    """Area, compactness and spread (both principal axes) of the dark, bright and changed pixels."""
    g = images.astype(np.float32).mean(axis=-1)
    n, h, w = g.shape
    d = g - np.median(g.reshape(n, -1), axis=1)[:, None, None]
    yy, xx = np.mgrid[:h, :w]
    feats = []
    for mask in (d < -45, d > 45, np.abs(d) > 25):
        area = mask.mean(axis=(1, 2))
        inner = mask[:, 1:-1, 1:-1] & mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1] & mask[:, 1:-1, :-2] & mask[:, 1:-1, 2:]
        spread = np.zeros((n, 2))
        for i, m in enumerate(mask):
            if m.sum() >= 4:
                ev = np.linalg.eigvalsh(np.cov(np.stack([xx[m], yy[m]]).astype(float)))
                spread[i] = np.sqrt(np.clip(ev, 0, None))
        feats += [np.sqrt(area), inner.mean(axis=(1, 2)) / (area + 1e-3), spread[:, 0], spread[:, 1]]
    return np.stack(feats, 1)


def test_classes_are_separable_at_32px_in_grayscale():
    """Linear discriminant analysis on twelve crude shape statistics, tested on unseen seeds.

    Grayscale at 32 px is the hardest case (the patch cannot rely on its colour). Chance is 25%;
    these features reach about 90% (the misses are dark scratches taken for cracks).
    """
    xa, ya, _ = generate_arrays(size=32, per_class=25, seed=1, channels=1)
    xb, yb, _ = generate_arrays(size=32, per_class=25, seed=2, channels=1)
    fa, fb = _features(xa), _features(xb)
    means = np.stack([fa[ya == c].mean(0) for c in range(len(CLASSES))])
    cov = np.cov((fa - means[ya]).T) + 1e-3 * np.eye(fa.shape[1])
    w = np.linalg.solve(cov, means.T)
    pred = (fb @ w - 0.5 * (means * w.T).sum(1)).argmax(1)
    acc = (pred == yb).mean()
    assert acc >= 0.8, acc
    for c in range(len(CLASSES)):
        assert (pred[yb == c] == c).mean() >= 0.6, (CLASSES[c], pred[yb == c])


def test_patch_changes_the_largest_area():
    images, labels, _ = generate_arrays(size=32, per_class=10, seed=3, channels=1)
    changed = _features(images)[:, 8]  # sqrt of the area that differs from the median by > 25
    medians = [np.median(changed[labels == c]) for c in range(len(CLASSES))]
    assert np.argmax(medians) == CLASSES.index("patch"), medians


def test_background_alone_does_not_reveal_the_class():
    """Mean colour of the image border (mostly background) is about the same for every class."""
    images, labels, _ = generate_arrays(size=32, per_class=20, seed=5)
    border = np.concatenate([images[:, :3].reshape(len(images), -1, 3), images[:, -3:].reshape(len(images), -1, 3)], 1)
    means = np.array([border[labels == c].mean() for c in range(len(CLASSES))])
    assert means.max() - means.min() < 25, means
