"""The arrays task: a user's .npz read as tokens, signals or images by shape, a deterministic
split, one-line errors for anything else, and a search on such a file through the CLI."""

import re
import textwrap

import numpy as np
import pytest
import torch

import nas
from evaluators.tasks import IGNORE_INDEX, get_task, task_io_for
from search_spaces.schema import SettingError
from tests.cli_helpers import assert_one_line_error, invoke


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def _rows(x):
    return sorted(map(tuple, x.reshape(len(x), -1).tolist()))


def test_tokens_classification_and_a_seeded_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 9, size=(20, 6))
    x[:, 0] = np.arange(20)  # every row unique: ids up to 19, so the vocabulary is 20
    y = np.arange(20) % 3
    path = _npz(tmp_path, x=x, y=y)
    io = task_io_for("arrays", {"path": path})
    assert (io.kind, io.vocab_size, io.num_classes, io.seq_len, io.per_token, io.causal) == ("tokens", 20, 3, 6,
                                                                                            False, False)
    a = get_task("arrays")(path=path, test_fraction=0.25)
    b = get_task("arrays")(path=path, test_fraction=0.25, seed=7)  # the search seed does not move the split
    (xtr, ytr), (xte, yte) = a.split("train"), a.split("test")
    assert len(xte) == 5 and len(xtr) == 15 and xtr.dtype == torch.int64
    for s in ("train", "test"):
        assert all(torch.equal(u, v) for u, v in zip(a.split(s), b.split(s)))
    assert _rows(torch.cat([xtr, xte]).numpy()) == _rows(x)  # every sample once, in one split
    assert all(int(yv) == int(xv[0]) % 3 for xv, yv in zip(torch.cat([xtr, xte]), torch.cat([ytr, yte])))
    c = get_task("arrays")(path=path, test_fraction=0.25, split_seed=1)
    assert not torch.equal(c.split("test")[0], xte)


def test_signals_are_standardized_per_channel_with_train_statistics(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2, 16)) * np.array([1.0, 5.0])[None, :, None] + np.array([3.0, -2.0])[None, :, None]
    path = _npz(tmp_path, x=x.astype(np.float32), y=np.arange(30) % 2)
    io = task_io_for("arrays", {"path": path})
    assert (io.kind, io.in_channels, io.seq_len, io.num_classes) == ("signal", 2, 16, 2)
    t = get_task("arrays")(path=path, test_fraction=0.2)
    (xtr, _), (xte, _) = t.split("train"), t.split("test")
    order = np.random.default_rng(0).permutation(30)  # split_seed 0, test = the first 6 of the permutation
    raw_train, raw_test = x[np.sort(order[6:])], x[np.sort(order[:6])]
    mean, std = raw_train.mean(axis=(0, 2), keepdims=True), raw_train.std(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(xtr.numpy(), (raw_train - mean) / std, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(xte.numpy(), (raw_test - mean) / std, rtol=1e-4, atol=1e-4)
    one = _npz(tmp_path, "one.npz", x=x[:, 0], y=np.arange(30) % 2)  # (N, L) float: one channel
    io = task_io_for("arrays", {"path": one})
    assert (io.kind, io.in_channels, io.seq_len) == ("signal", 1, 16)
    assert get_task("arrays")(path=one, standardize=False).split("train")[0].shape == (24, 1, 16)


def test_images_and_given_test_split(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, size=(10, 3, 6, 5), dtype=np.uint8)
    path = _npz(tmp_path, x=x, y=np.arange(10) % 4, x_test=x[:3], y_test=np.array([0, 1, 5]))
    io = task_io_for("arrays", {"path": path})
    assert (io.kind, io.in_channels, io.image_size, io.num_classes) == ("image", 3, (6, 5), 6)  # classes of both
    t = get_task("arrays")(path=path, standardize=False)
    assert torch.equal(t.split("train")[0], torch.from_numpy(x.astype(np.float32)))
    assert torch.equal(t.split("test")[1], torch.tensor([0, 1, 5]))


def test_per_token_labels_with_unlabelled_positions(tmp_path):
    x = np.array([[1, 2, 3, 4], [4, 3, 2, 1], [0, 0, 1, 1]])
    y = np.array([[0, -1, 1, 1], [2, 2, -100, 0], [1, 1, 1, 1]])
    path = _npz(tmp_path, x=x, y=y, x_test=x[:1], y_test=y[:1])
    io = task_io_for("arrays", {"path": path})
    assert (io.kind, io.per_token, io.num_classes, io.vocab_size) == ("tokens", True, 3, 5)
    _, ytr = get_task("arrays")(path=path).split("train")
    assert ytr.tolist() == [[0, IGNORE_INDEX, 1, 1], [2, 2, IGNORE_INDEX, 0], [1, 1, 1, 1]]


X, Y = np.zeros((8, 5), np.float32), np.arange(8) % 2
BAD = {
    "missing-y": (dict(x=X), "has no array 'y' (it has ['x'])"),
    "half-test": (dict(x=X, y=Y, x_test=X), "has only one of x_test and y_test"),
    "5-d": (dict(x=np.zeros((8, 1, 2, 2, 2)), y=Y),
            "x has shape (8, 1, 2, 2, 2) and dtype float64; allowed: int (N, L)"),
    "1-d": (dict(x=np.zeros(8), y=Y), "x has shape (8,) and dtype float64; allowed"),
    "complex": (dict(x=X.astype(np.complex64), y=Y), "x has shape (8, 5) and dtype complex64; allowed"),
    "bool": (dict(x=X.astype(bool), y=Y), "x has shape (8, 5) and dtype bool; allowed"),
    "nan": (dict(x=np.where(X == 0, np.nan, X), y=Y), "x has shape (8, 5) and dtype float32 and holds NaN or inf"),
    "negative-id": (dict(x=-np.ones((8, 5), int), y=Y), "holds a negative token id (-1); allowed: ids >= 0"),
    "float-y": (dict(x=X, y=Y.astype(float)), "y has shape (8,) and dtype float64 for x has shape (8, 5)"),
    "short-y": (dict(x=X, y=Y[:7]), "y has shape (7,) and dtype int64 for x has shape (8, 5) and dtype float32"),
    "per-token-signal": (dict(x=X, y=np.zeros((8, 5), int)), "y has shape (8, 5)"),
    "negative-class": (dict(x=X, y=Y - 1), "holds a negative class (-1); allowed: classes >= 0"),
    "one-class": (dict(x=X, y=np.zeros(8, int)), "holds only class 0; allowed: at least two classes"),
    "test-shape": (dict(x=X, y=Y, x_test=np.zeros((2, 4), np.float32), y_test=Y[:2]),
                   "x_test has shape (2, 4) and dtype float32, unlike x has shape (8, 5)"),
    "one-sample": (dict(x=X[:1], y=np.array([1])), "one sample cannot be split"),
    "objects": (dict(x=np.array([[1, "a"]], dtype=object), y=Y[:1]), "cannot be read as a .npz file"),
    "huge-class": (dict(x=X, y=np.where(Y == 1, 10**9, 0)), "y holds class 1000000000; allowed: classes 0 .. 1048575"),
    "huge-test-class": (dict(x=X, y=Y, x_test=X[:2], y_test=np.array([0, 2**21])), "y_test holds class 2097152"),
    "huge-token-id": (dict(x=np.where(X == 0, 2**40, 1).astype(np.int64), y=Y),
                      "x holds token id 1099511627776; allowed: token ids 0 .. 1048575"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_unusable_file_is_one_line_naming_file_key_and_shape(tmp_path, case):
    arrays, message = BAD[case]
    path = _npz(tmp_path, **arrays)
    with pytest.raises(SettingError) as e:
        task_io_for("arrays", {"path": path})
    assert e.value.path == "task.params.path" and "\n" not in str(e.value)
    assert e.value.message.startswith(f"{path}: ") and message in e.value.message, e.value.message


def test_missing_or_foreign_file_and_bad_params(tmp_path):
    for params, message in (({}, "a .npz file is required"),
                            ({"path": str(tmp_path / "no.npz")}, "no.npz: does not exist"),
                            ({"path": str(tmp_path)}, "is not a file (allowed: a .npz file")):
        with pytest.raises(SettingError, match=re.escape(message)):
            task_io_for("arrays", params)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SettingError, match=r"junk.npz: cannot be read as a .npz file"):
        task_io_for("arrays", {"path": str(tmp_path / "junk.npz")})
    path = _npz(tmp_path, x=X, y=Y)
    with pytest.raises(SettingError, match=r"task.params.test_fraction: 0.01 of 8 samples leaves no train or no test"):
        task_io_for("arrays", {"path": path, "test_fraction": 0.01})
    with pytest.raises(SettingError, match=r"task.params.test_fraction: 1.5 is not allowed \(a number in \(0, 1\)\)"):
        task_io_for("arrays", {"path": path, "test_fraction": 1.5})


SPACE = """
name: mine
task: {name: arrays, params: {path: %s}}
objectives: {accuracy: maximize, params: minimize}
trials: 2
train: {steps: 3, batch_size: 8, eval_samples: 0}
latency: {repeats: 3, warmup: 1, max_seconds: 0.2}
arch:
  stem: {patch: [2, 4]}
  stages:
    - depth: 1
      dim: [8, 16]
      mixer: {choices: {softmax: {heads: [1, 2]}, conv: {kernel_size: [3]}}}
"""


@pytest.mark.parametrize("arrays,fragment", [
    (dict(x=np.zeros((8, 16), np.float32), y=np.array([0, 1] * 3 + [0, 10**9])), "y holds class 1000000000"),
    (dict(x=np.full((8, 16), 2**40), y=np.arange(8) % 2), "x holds token id 1099511627776"),
], ids=["label", "token-id"])
def test_a_huge_label_or_id_is_blamed_not_the_width(tmp_path, arrays, fragment):
    """Refused naming the file, the array and the value, not as a width too large for the machine
    (the memory check sees a head or an embedding of 10**9 rows first)."""
    space = SPACE.replace("stem: {patch: [2, 4]}", "stem: {patch: [1]}") % _npz(tmp_path, "big.npz", **arrays)
    (tmp_path / "space.yaml").write_text(textwrap.dedent(space))
    r = invoke("search", "--space", tmp_path / "space.yaml", "--study", "b", "--dry-run", cwd=tmp_path)
    line = assert_one_line_error(r, "space.yaml: task.params.path:", "big.npz: ", fragment)
    assert "arch.stages" not in line and sorted(p.name for p in tmp_path.iterdir()) == ["big.npz", "space.yaml"]


@pytest.mark.slow
def test_search_on_a_users_npz_through_the_cli(tmp_path):
    rng = np.random.default_rng(3)
    y = np.arange(24) % 2
    x = rng.normal(size=(24, 2, 16)).astype(np.float32) + y[:, None, None]
    (tmp_path / "space.yaml").write_text(textwrap.dedent(SPACE % _npz(tmp_path, x=x, y=y)))
    url = f"sqlite:///{tmp_path}/m.db"
    invoke("search", "--space", tmp_path / "space.yaml", "--study", "m", "--storage", url, cwd=tmp_path, check=True)
    df = nas.load_trials(url, "m")
    assert list(df["state"]) == ["COMPLETE", "COMPLETE"] and df["accuracy"].between(0, 1).all()

    (tmp_path / "bad.yaml").write_text(textwrap.dedent(SPACE % _npz(tmp_path, "bad.npz", x=x)))
    r = invoke("search", "--space", tmp_path / "bad.yaml", "--study", "b", "--storage", f"sqlite:///{tmp_path}/b.db",
               cwd=tmp_path)
    assert_one_line_error(r, "bad.yaml: task.params.path:", "bad.npz: has no array 'y' (it has ['x'])")
    assert not (tmp_path / "b.db").exists()
