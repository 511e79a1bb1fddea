"""The byte-level text task: deterministic split by file, bits per byte against numpy, the
default corpus (the standard library), and one-line errors for a corpus that cannot be used."""

import math
import os
import re
import sysconfig
import textwrap

import numpy as np
import pytest
import torch

from evaluators.tasks import get_task, make_task, task_io_for
from evaluators.tasks.text import STDLIB_SKIP_DIRS, find_corpus
from evaluators.train import TrainConfig, evaluate_split, train_proxy
from search_spaces.schema import SettingError
from tests.cli_helpers import assert_one_line_error, invoke

SMALL = dict(context=8, train_bytes=0, val_bytes=0, test_bytes=0)


def _folder(root, names, order=1):
    """A corpus whose file i holds only the marker ``<i>`` repeated, created in ``order``."""
    for i, name in list(enumerate(names))[::order]:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"<{i}>".encode() * 40)
    return root


NAMES = [f"{d}/f{i}.txt" for d in ("a", "b/c", "d") for i in range(12)]


def _markers(task, split):
    x, y = task.split(split)
    text = bytes([int(x[0, 0])] + y.flatten().tolist()).decode()  # the split's byte stream
    return {int(m) for m in re.findall(r"<(\d+)>", text)}  # complete markers (the stream's tail is cut)


def test_split_by_file_is_deterministic_and_disjoint(tmp_path):
    a = make_task("text", {"path": str(_folder(tmp_path / "a", NAMES)), **SMALL})
    b = get_task("text")(path=str(_folder(tmp_path / "b", NAMES, order=-1)), **SMALL)  # created in reverse
    seen = {}
    for split in ("train", "val", "test"):
        for t in (a, b):
            assert t.split(split)[0].dtype == torch.int64
        assert torch.equal(a.split(split)[0], b.split(split)[0]) and torch.equal(a.split(split)[1], b.split(split)[1])
        seen[split] = _markers(a, split)
        assert seen[split], split
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
    assert seen["train"] | seen["val"] | seen["test"] == set(range(len(NAMES)))  # every file read, once
    corpus = find_corpus(str(tmp_path / "a"))
    assert sorted(s.name for segs in corpus.splits.values() for s in segs) == sorted(NAMES)


def test_windows_predict_every_byte_once(tmp_path):
    (tmp_path / "one.txt").write_bytes(bytes(range(256)) * 4)
    t = get_task("text")(path=str(tmp_path / "one.txt"), context=16, val_fraction=0.25, test_fraction=0.25,
                         train_bytes=0, val_bytes=0, test_bytes=0)
    x, y = t.split("train")  # the first half of the file: 512 bytes -> (512 - 1) // 16 = 31 windows
    assert x.shape == y.shape == (31, 16)
    assert torch.equal(y.flatten(), torch.arange(1, 1 + 31 * 16) % 256)  # each byte after the first, once
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])
    assert torch.equal(t.split("test")[1][0, :3], torch.tensor([0x01, 0x02, 0x03]))  # bytes 768.. of the file


class _Bigram(torch.nn.Module):
    """Logits log P[x_t, :] for the next byte: a fixed bigram table (a known distribution)."""

    def __init__(self, logp):
        super().__init__()
        self.logp = torch.as_tensor(logp, dtype=torch.float32)

    def forward(self, x):
        return self.logp[x]  # (B, N, 256)


def test_bits_per_byte_uniform_is_eight_and_bigram_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.choice(np.frombuffer(b"abcdefgh \n", np.uint8), size=3000, p=np.linspace(1, 3, 10) / 20)
    (tmp_path / "t.txt").write_bytes(data.tobytes())
    t = get_task("text")(path=str(tmp_path / "t.txt"), context=32, val_fraction=0.2, test_fraction=0.1,
                         train_bytes=0, val_bytes=0, test_bytes=0)
    acc, loss = evaluate_split(_Bigram(np.zeros((256, 256))), t)  # the eval split is "val"
    assert t.eval_split == "val" and t.scores(acc, loss)["bits_per_byte"] == pytest.approx(8.0, abs=1e-5)

    counts = np.ones((256, 256))  # add-one bigram counts on the first 1000 bytes
    np.add.at(counts, (data[:999], data[1:1000]), 1)
    p = counts / counts.sum(1, keepdims=True)
    acc, loss = evaluate_split(_Bigram(np.log(p)), t)
    val = data[2100:2700]  # int(3000 * 0.7) = 2100, then int(3000 * 0.2) = 600 bytes
    n = (len(val) - 1) // 32 * 32  # bytes predicted by the windows
    prev, nxt = val[:n], val[1:n + 1]
    assert t.scores(acc, loss)["bits_per_byte"] == pytest.approx(np.mean(-np.log2(p[prev, nxt])), rel=1e-5)
    assert acc == pytest.approx(np.mean(p[prev].argmax(1) == nxt))


def test_proxy_reports_the_validation_split(tmp_path):
    _folder(tmp_path / "c", NAMES)
    t = get_task("text")(path=str(tmp_path / "c"), **SMALL)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(256, 8), torch.nn.Linear(8, 256))
    r = train_proxy(model, t, TrainConfig(steps=2, batch_size=4, eval_samples=0))
    assert (r.accuracy, r.test_loss) == evaluate_split(model, t, split="val")
    assert r.test_loss != evaluate_split(model, t, split="test")[1]
    with pytest.raises(ValueError, match=r"task 'text' has no split 'dev'; it has \['train', 'val', 'test'\]"):
        t.split("dev")


def test_default_corpus_is_the_standard_library():
    corpus = find_corpus()
    root = sysconfig.get_paths()["stdlib"]
    names = [s.name for segs in corpus.splits.values() for s in segs]
    assert corpus.root == root and len(names) > 100 and all(n.endswith(".py") for n in names)
    assert {"os.py", "json/decoder.py"} <= set(names)
    assert not any(part in STDLIB_SKIP_DIRS for n in names for part in n.split("/")[:-1])
    assert not any(n.split("/")[-1].startswith("_sysconfigdata") for n in names)
    assert all(corpus.bytes_in(s) > 100_000 for s in ("train", "val", "test"))
    assert find_corpus() == corpus
    io = task_io_for("text")
    assert (io.kind, io.vocab_size, io.num_classes, io.seq_len, io.causal, io.per_token) == \
        ("tokens", 256, 256, 128, True, True)


@pytest.mark.parametrize("params,key,message", [
    ({"path": "{tmp}/nowhere"}, "task.params.path", "does not exist"),
    ({"path": "{tmp}/empty"}, "task.params.path", "holds no file"),
    ({"path": "{tmp}/full", "pattern": "*.md"}, "task.params.path", "holds no file matching '*.md'"),
    ({"path": "{tmp}/broken"}, "task.params.path", "dangling cannot be read (No such file or directory)"),
    ({"pattern": "*.py"}, "task.params.pattern", "not allowed without path"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "task.params.test_fraction", "leaves no training data"),
    ({"context": 0}, "task.params.context", "0 is not allowed (an int in [1, 65536])"),
    ({"path": "{tmp}/full", "val_bytes": 4, "context": 8}, "task.params.val_bytes",
     "fewer than context + 1 = 9 (allowed: val_bytes >= 9)"),
    ({"path": "{tmp}/full/f0.txt"}, "task.params.path", "the train part of"),
], ids=["missing", "empty", "no-match", "broken-link", "pattern-alone", "fractions", "context", "cap", "tiny-file"])
def test_unusable_corpus_is_one_error(tmp_path, params, key, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f0.txt").write_text("short")
    for i in range(1, 40):
        (tmp_path / "full" / f"f{i}.txt").write_text("some text " * 10)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ok.txt").write_text("x" * 100)
    os.symlink(tmp_path / "gone", tmp_path / "broken" / "dangling")
    params = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in params.items()}
    with pytest.raises(SettingError) as e:
        task_io_for("text", params)
    assert e.value.path == key and message in e.value.message and "\n" not in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_named(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i}.txt").write_text("text " * 20)
    os.chmod(tmp_path / "f3.txt", 0)
    with pytest.raises(SettingError, match=r"f3.txt cannot be read \(permission denied\)"):
        task_io_for("text", {"path": str(tmp_path)})


SPACE = """
name: lm
task: {name: text, params: {path: %s, context: 16}}
objectives: {%s: minimize, latency_ms: minimize}
arch:
  stages:
    - depth: 1
      dim: 16
      mixer: {choices: {softmax: {heads: [1]}}}
"""


def test_space_errors_are_one_line_before_anything_runs(tmp_path):
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(SPACE % (tmp_path / "nowhere", "bits_per_byte")))
    r = invoke("search", "--space", tmp_path / "bad.yaml", "--study", "s", "--dry-run", cwd=tmp_path)
    assert_one_line_error(r, "bad.yaml: task.params.path:", "nowhere", "does not exist")
    other = textwrap.dedent(SPACE % ("x", "bits_per_byte")).replace(
        "{name: text, params: {path: x, context: 16}}", "{name: mqar, params: {vocab_size: 32, seq_len: 16}}")
    (tmp_path / "mqar.yaml").write_text(other)
    r = invoke("search", "--space", tmp_path / "mqar.yaml", "--study", "s", "--dry-run", cwd=tmp_path)
    assert_one_line_error(r, "objectives.bits_per_byte: task 'mqar' does not report bits_per_byte",
                          "tasks that do: ['text']")
    assert not (tmp_path / "results").exists()


def test_evaluate_reports_bits_per_byte(tmp_path):
    import optuna

    from evaluators import load_space
    from evaluators.evaluation import EvalSettings, evaluate
    from search_spaces import sample

    _folder(tmp_path / "c", NAMES)
    (tmp_path / "lm.yaml").write_text(textwrap.dedent(SPACE % (tmp_path / "c", "bits_per_byte")))
    space = load_space(str(tmp_path / "lm.yaml"))
    settings = EvalSettings.from_space(space)
    settings = EvalSettings(**{**settings.__dict__, "train": TrainConfig(steps=3, batch_size=4)})
    arch = sample(space, optuna.create_study().ask())
    m = evaluate(arch, settings)
    assert 0 < m["bits_per_byte"] < 8.5 and math.isfinite(m["bits_per_byte"]) and 0 <= m["accuracy"] <= 1
