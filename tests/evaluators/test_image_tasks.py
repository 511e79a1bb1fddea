"""Image tasks: digits (scikit-learn, offline) and cifar10 read from a local python-batches directory."""

import pickle

import numpy as np
import pytest
import torch

from evaluators.tasks import get_task, make_task, task_io_for
from evaluators.tasks.cifar10 import TEST_FILE, TRAIN_FILES


@pytest.fixture(autouse=True)
def _needs_sklearn(request):
    if "digits" in request.node.name:
        pytest.importorskip("sklearn")


# ---------------------------------------------------------------- digits
def test_digits_shapes_io_and_normalization():
    t = get_task("digits")(seed=0)
    assert t.io.kind == "image" and t.io.num_classes == 10 and t.io.image_size == (8, 8) and t.io.in_channels == 1
    (xtr, ytr), (xte, _) = t.split("train"), t.split("test")
    assert xtr.shape[1:] == (1, 8, 8) == xte.shape[1:] and xtr.dtype == torch.float32 and ytr.dtype == torch.long
    assert len(xtr) + len(xte) == 1797 and len(xte) == round(1797 * 0.2)
    assert set(ytr.tolist()) == set(range(10))
    assert abs(xtr.mean().item()) < 1e-4 and abs(xtr.std().item() - 1) < 1e-2  # standardized on train
    assert tuple(xtr.shape[1:]) == t.io.input_shape(1)[1:]


def test_digits_deterministic_under_seed():
    a, b, c = (get_task("digits")(seed=s) for s in (0, 0, 1))
    assert torch.equal(a.split("train")[0], b.split("train")[0]) and torch.equal(a.split("test")[1], b.split("test")[1])
    assert not torch.equal(a.split("test")[1], c.split("test")[1])


def test_digits_rejects_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        task_io_for("digits", {"test_fraction": 1.5})


# ---------------------------------------------------------------- cifar10
def _write_cifar(root, n_train_per_batch=6, n_test=5, seed=0):
    """A tiny directory in the real CIFAR-10 python format; returns the raw train arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    raw = []
    for name, n in [(f, n_train_per_batch) for f in TRAIN_FILES] + [(TEST_FILE, n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        blob = pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                             b"filenames": [b"x.png"] * n}, protocol=2)
        # the published files were pickled by numpy 1.x, whose arrays live in numpy.core
        assert b"numpy._core.multiarray\n" in blob or b"numpy.core.multiarray\n" in blob
        (root / name).write_bytes(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
        raw.append((data, labels))
    return raw


def test_cifar10_reads_the_python_batches(tmp_path):
    raw = _write_cifar(tmp_path / "cifar")
    t = get_task("cifar10")(seed=0, root=str(tmp_path / "cifar"))
    assert t.io.kind == "image" and t.io.image_size == (32, 32) and t.io.in_channels == 3 and t.io.num_classes == 10
    (xtr, ytr), (xte, yte) = t.split("train"), t.split("test")
    assert xtr.shape == (30, 3, 32, 32) and xte.shape == (5, 3, 32, 32) and xtr.dtype == torch.float32
    assert ytr.tolist() == sum((lab for _, lab in raw[:5]), []) and yte.tolist() == raw[5][1]
    # pixel (channel 1, row 2, col 3) of the first image: data index 1*1024 + 2*32 + 3, then normalized
    v = raw[0][0][0, 1024 + 2 * 32 + 3] / 255.0
    assert xtr[0, 1, 2, 3].item() == pytest.approx((v - 0.4822) / 0.2435, abs=1e-5)


def test_cifar10_subsets_are_seeded(tmp_path):
    _write_cifar(tmp_path / "c")
    params = {"root": str(tmp_path / "c"), "n_train": 7, "n_test": 3}
    a, b, c = (get_task("cifar10")(seed=s, **params) for s in (0, 0, 1))
    assert a.split("train")[0].shape[0] == 7 and a.split("test")[0].shape[0] == 3
    assert torch.equal(a.split("train")[0], b.split("train")[0])
    assert not torch.equal(a.split("train")[0], c.split("train")[0])
    assert make_task("cifar10", params, seed=0).split("train")[1].shape == (7,)


def test_cifar10_missing_directory_or_file(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=r"cifar10: data directory .*nowhere does not exist") as e:
        task_io_for("cifar10", {"root": str(missing)})
    assert "\n" not in str(e.value)
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    (tmp_path / "c" / TEST_FILE).unlink()
    with pytest.raises(ValueError, match=r"lacks data_batch_3, test_batch$"):
        get_task("cifar10")(root=str(tmp_path / "c"))


@pytest.mark.parametrize("content,message", [
    (b"not a pickle", "is not a CIFAR-10 python batch"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "lacks b'data' and b'labels'"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"b'data' must be uint8 \(n, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "must be uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "b'labels' must be 2 ints in 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "b'labels' must be 2 ints"),
], ids=["garbage", "no-labels", "wrong-width", "wrong-dtype", "label-range", "label-count"])
def test_cifar10_malformed_batch(tmp_path, content, message):
    _write_cifar(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_2", "wb") as f:
        f.write(content if isinstance(content, bytes) else pickle.dumps(content))
    t = get_task("cifar10")(root=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=message) as e:
        t.split("train")
    assert "data_batch_2" in str(e.value) and "\n" not in str(e.value)


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path):
    _write_cifar(tmp_path / "c")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "c" / TEST_FILE, "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="builtins.print is not allowed"):
        get_task("cifar10")(root=str(tmp_path / "c")).split("test")
