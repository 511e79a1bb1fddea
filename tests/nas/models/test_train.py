"""`nas train` end to end: search -> train -> kill -> resume -> load (nas.load_model, timm) -> same
outputs; the refusals (no such trial, another architecture's folder, another task); export."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nas
from nas.models.folder import CHECKPOINT_FILE, WEIGHTS_FILE
from nas.models.train_spec import spec_from_trial
from nas.models.training import train
from tests.cli_helpers import NAS, assert_one_line_error, default_stop_signals, invoke, write_space

pytestmark = pytest.mark.slow

SPACE = """
name: t16
task: {name: mqar, params: {vocab_size: 16, seq_len: 8, num_kv_pairs: 2, n_train: 64, n_test: 16}}
objectives: {accuracy: maximize, flops@long: minimize}
deploy: {long: {seq_len: 16}}
trials: 2
train: {steps: 2, batch_size: 8, lr: 0.01, threads: 1}
latency: {repeats: 1, warmup: 0, max_seconds: 0.05}
arch:
  stages:
    - depth: [1]
      dim: [8, 16]
      mixer: {choices: {softmax: {heads: [1, 2]}}}
      ffn: {type: [mlp], ratio: 2}
"""
STEPS = 30


def _url(d):
    return f"sqlite:///{d}/results/s.db"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    write_space(d, text=SPACE)
    invoke("search", "--space", "space.yaml", "--study", "s", "--trials", 2, "--sampler", "random", cwd=d, check=True)
    return d


@pytest.fixture(scope="module")
def reference(study_dir):
    """Trial 0 trained without a stop, in this process: (folder, the trained model in memory)."""
    _, model = train(spec_from_trial(_url(study_dir), "s", 0, steps=STEPS), study_dir / "ref", checkpoint_every=2)
    return study_dir / "ref", model.eval()


def _train_args(out, trial=0, *extra):
    return ["train", "--study", "s", "--trial", str(trial), "--steps", str(STEPS), "--out", str(out),
            "--checkpoint-every", "2", *extra]


def _stop_after_first_checkpoint(cwd, out, sig):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*NAS, *_train_args(out)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)
    ckpt, deadline = cwd / out / CHECKPOINT_FILE, time.monotonic() + 240
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.005)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(study_dir, reference, sig):
    ref_dir, ref_model = reference
    out = f"run-{sig.name}"
    rc, stderr = _stop_after_first_checkpoint(study_dir, out, sig)
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM), stderr
    if sig == signal.SIGTERM:
        assert "resume from the last checkpoint" in stderr and "Traceback" not in stderr, stderr
    step = torch.load(study_dir / out / CHECKPOINT_FILE, weights_only=True)["loop"]["step"]
    assert 2 <= step < STEPS, step  # stopped mid-run, after a checkpoint
    assert not (study_dir / out / WEIGHTS_FILE).exists()

    r = invoke(*_train_args(out), cwd=study_dir, check=True)
    assert f"resuming from step {step}/{STEPS}" in r.stderr
    assert not (study_dir / out / CHECKPOINT_FILE).exists()  # removed once the run is complete
    got, want = load_file(study_dir / out / WEIGHTS_FILE), ref_model.state_dict()
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]


def test_load_model_timm_and_memory_give_the_same_outputs(reference):
    import timm

    ref_dir, ref_model = reference
    loaded = nas.load_model(ref_dir)
    assert not loaded.training
    via_timm = timm.create_model("mixer_nas", arch=str(ref_dir), checkpoint_path=str(ref_dir / WEIGHTS_FILE)).eval()
    arch = json.loads((ref_dir / "arch.json").read_text())
    io = json.loads((ref_dir / "train.json").read_text())["io"]
    via_dict = timm.create_model("mixer_nas", arch=arch, io=io, checkpoint_path=str(ref_dir / WEIGHTS_FILE)).eval()
    x = torch.randint(0, 16, (4, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref_model(x)
        for m in (loaded, via_timm, via_dict):
            assert torch.equal(m(x), want)
        untrained = timm.create_model("mixer_nas", arch=arch, io=io).eval()  # no checkpoint: other weights
        assert not torch.allclose(untrained(x), want)


def test_the_folder_holds_the_run(reference):
    ref_dir, _ = reference
    assert sorted(p.name for p in ref_dir.iterdir()) == ["arch.json", "loss.png", "metrics.json", "model.safetensors",
                                                        "train.json"]
    metrics = json.loads((ref_dir / "metrics.json").read_text())
    model = nas.load_model(ref_dir)
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert metrics["steps"] == STEPS and metrics["split"] == "test"
    assert 0 <= metrics["accuracy"] <= 1 and metrics["latency_ms"] > 0 and metrics["flops"] > 0
    searched = nas.load_trials(_url(ref_dir.parent), "s").set_index("number").loc[0]
    for cost in ("params", "flops", "flops@long", "params@long", "state_mb"):  # as the search measured them
        assert metrics[cost] == searched[cost], cost
    assert metrics["flops@long"] > metrics["flops"]  # twice the tokens
    run = json.loads((ref_dir / "train.json").read_text())
    assert run["train"]["steps"] == STEPS and run["source"]["trial"] == 0 and run["task"]["name"] == "mqar"
    assert (ref_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_refuses_a_trial_that_does_not_exist(study_dir):
    r = invoke(*_train_args("none", trial=99), cwd=study_dir)
    assert_one_line_error(r, "study 's' has no trial 99", "0..1")
    assert not (study_dir / "none").exists()


def test_refuses_a_folder_holding_another_architecture(study_dir, reference):
    import optuna

    ref_dir, _ = reference
    trials = optuna.load_study(study_name="s", storage=_url(study_dir)).trials
    assert trials[0].user_attrs["arch_id"] != trials[1].user_attrs["arch_id"]  # the fixture's two archs differ
    before = _snapshot(ref_dir)
    r = invoke(*_train_args(ref_dir, trial=1), cwd=study_dir)
    assert_one_line_error(r, f"--out {ref_dir}", "another architecture", trials[1].user_attrs["arch_id"])
    assert _snapshot(ref_dir) == before


def test_refuses_a_task_the_trial_was_not_searched_on(study_dir):
    write_space(study_dir, name="other.yaml", text=SPACE.replace("n_train: 64", "n_train: 65"))
    r = invoke(*_train_args("other", 0, "--space", "other.yaml"), cwd=study_dir)
    assert_one_line_error(r, "--space other.yaml", "is not the task trial 0 of study 's' was searched on")
    assert not (study_dir / "other").exists()


def test_a_finished_run_is_not_trained_again(study_dir, reference):
    ref_dir, _ = reference
    before = _snapshot(ref_dir)
    r = invoke(*_train_args(ref_dir), cwd=study_dir, check=True)
    assert "already holds this finished run" in r.stderr
    assert _snapshot(ref_dir) == before


# ------------------------------------------------------------------------------ careless input
def test_an_out_folder_that_cannot_be_made_is_one_line(study_dir, tmp_path):
    """--out under a file, or in a folder this user cannot write: refused before anything is
    trained or written (the run used to end in a traceback from mkdir)."""
    (tmp_path / "a-file").write_text("x")
    r = invoke(*_train_args(tmp_path / "a-file" / "run"), cwd=study_dir)
    assert_one_line_error(r, f"--out {tmp_path / 'a-file' / 'run'}: {tmp_path / 'a-file'} is a file, not a folder")
    if os.geteuid() != 0:  # root writes anywhere: the permission case is checked below without chmod
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        r = invoke(*_train_args(locked / "run"), cwd=study_dir)
        assert_one_line_error(r, f"the folder {locked} is not writable")
    assert sorted(p.name for p in tmp_path.iterdir()) in (["a-file"], ["a-file", "locked"])


def test_a_read_only_out_folder_is_found_before_training(study_dir, tmp_path, monkeypatch):
    """As root (CI) a mode bit does not stop a write: the check asks os.access, as the kernel
    would answer another user; here it answers no for the folder the run would be made in."""
    import nas.models.training as training

    real = os.access

    def access(path, mode, **kw):  # os.access, but tmp_path cannot be written
        return False if Path(path) == tmp_path and mode & os.W_OK else real(path, mode, **kw)

    monkeypatch.setattr(training.os, "access", access)
    for out in (tmp_path / "new" / "run", tmp_path):  # made inside tmp_path, or tmp_path itself (empty)
        r = invoke(*_train_args(out), cwd=study_dir)
        assert_one_line_error(r, f"--out {out}: the folder {tmp_path} is not writable (permission denied)")
    assert list(tmp_path.iterdir()) == []


def _tampered(reference, tmp_path, name, edit):
    ref_dir, _ = reference
    folder = tmp_path / "m"
    shutil.copytree(ref_dir, folder)
    path = folder / name
    if name.endswith(".json"):
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    else:
        path.write_bytes(edit(path.read_bytes()))
    return folder


@pytest.mark.parametrize("name,edit,fragment", [
    ("arch.json", lambda d: d["stages"][0].update(dim=-1), "arch.json: stages[0].dim: -1 must be an integer >= 1"),
    ("arch.json", lambda d: d.pop("stem"), "arch.json: not an ArchSpec dict: 'stem'"),
    ("arch.json", lambda d: d["stages"][0]["blocks"][0]["mixer"]["params"].update(heads=3),
     "arch.json: stages[0].blocks[0].mixer.heads: 3 does not divide dim"),
    ("arch.json", lambda d: d["stages"][0].update(dim=d["stages"][0]["dim"] * 2),
     "model.safetensors: the weights do not fit the model its arch.json describes (size mismatch for"),
    ("train.json", lambda d: d["io"].update(kind="pixels"), "train.json: io: not a task I/O (TaskIO.kind 'pixels'"),
    ("train.json", lambda d: d["io"].update(vocab_size=-5), "cannot build the model of arch.json and train.json"),
    ("model.safetensors", lambda b: b[:100], "model.safetensors: cannot be read as safetensors weights"),
    ("model.safetensors", lambda b: b[:-10], "the file is damaged or truncated"),
], ids=["dim", "no-stem", "heads", "wider", "io-kind", "io-vocab", "cut-header", "cut-tail"])
def test_load_model_of_a_tampered_folder_is_one_line(reference, tmp_path, name, edit, fragment):
    folder = _tampered(reference, tmp_path, name, edit)
    with pytest.raises(nas.UserError) as e:
        nas.load_model(folder)
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
    r = invoke("export-model", folder, "--out", tmp_path / "m.pt", cwd=tmp_path)  # the CLI says the same
    assert_one_line_error(r, fragment)


@pytest.mark.parametrize("text,fragment", [
    ('{"stages": ', "arch.json: cannot be read as JSON"),
    ('{"stem": {}, "stem": {}}', "arch.json: cannot be read as JSON (key 'stem' appears twice"),
], ids=["cut", "key-twice"])
def test_load_model_of_an_arch_json_that_is_not_json_is_one_line(reference, tmp_path, text, fragment):
    folder = _tampered(reference, tmp_path, "arch.json", lambda d: None)
    (folder / "arch.json").write_text(text)
    with pytest.raises(nas.UserError, match=re.escape(fragment)):
        nas.load_model(folder)


def test_trials_from_front_trains_each_member(study_dir):
    from nas.results.trials import load_trials, pareto_front

    front = sorted(int(n) for n in pareto_front(load_trials(_url(study_dir), "s"))["number"])
    invoke("train", "--study", "s", "--trials-from-front", "--steps", 2, "--out", "front", cwd=study_dir, check=True)
    assert sorted(p.name for p in (study_dir / "front").iterdir()) == [f"trial-{n}" for n in front]
    for n in front:
        assert json.loads((study_dir / "front" / f"trial-{n}" / "train.json").read_text())["source"]["trial"] == n


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated in favour of torch.export
def test_export_model_torchscript_matches(study_dir, reference):
    ref_dir, ref_model = reference
    r = invoke("export-model", ref_dir, "--format", "torchscript", "--out", study_dir / "m.pt", cwd=study_dir, check=True)
    assert "outputs match the model" in r.stderr
    scripted = torch.jit.load(str(study_dir / "m.pt"))
    x = torch.randint(0, 16, (5, 8))
    with torch.no_grad():
        assert torch.equal(scripted(x), ref_model(x))


def test_arch_file_trains_on_a_space_with_the_same_task_only(study_dir, reference):
    ref_dir, _ = reference
    invoke("train", "--arch", ref_dir / "arch.json", "--space", "space.yaml", "--steps", 2, "--out", "from-arch",
           cwd=study_dir, check=True)
    run = json.loads((study_dir / "from-arch" / "train.json").read_text())
    assert run["arch_id"] == json.loads((ref_dir / "train.json").read_text())["arch_id"]
    assert run["source"] == {"arch": str(ref_dir / "arch.json")} and run["train"]["steps"] == 2
    write_space(study_dir, name="other2.yaml", text=SPACE.replace("n_test: 16", "n_test: 17"))
    r = invoke("train", "--arch", ref_dir, "--space", "other2.yaml", "--steps", 2, "--out", "x", cwd=study_dir)
    assert_one_line_error(r, f"--arch {ref_dir}: it was trained on task mqar", "not on space t16's task")
    assert not (study_dir / "x").exists()


def test_a_model_too_large_for_this_machine_is_refused_before_anything_is_written(study_dir, monkeypatch):
    """An arch file of width 10^7 (too large anywhere), and a trial's model on a machine given
    64 KiB: one line naming the architecture, and --out is not made (no arch.json, no train.json)."""
    import optuna

    arch = json.loads(optuna.load_study(study_name="s", storage=_url(study_dir)).trials[0].user_attrs["arch"])
    arch["stages"][0]["dim"] = 10**7
    wide = study_dir / "wide.json"
    wide.write_text(json.dumps(arch))
    r = invoke("train", "--arch", wide, "--space", "space.yaml", "--steps", 2, "--out", "wide", cwd=study_dir)
    assert_one_line_error(r, f"--arch {wide}: too large for this machine (training it at batch 8 needs about",
                          "of memory available may be used)")
    assert not (study_dir / "wide").exists()
    monkeypatch.setenv("MIXER_NAS_MEMORY", "64KiB")
    for args in (_train_args("big-one"), _train_args("big-front")[:3] + ["--trials-from-front"] + _train_args("big-front")[5:]):
        r = invoke(*args, cwd=study_dir)
        assert_one_line_error(r, "of study s: too large for this machine (training it at batch 8")
    assert not (study_dir / "big-one").exists() and not (study_dir / "big-front").exists()
