"""A model folder's train.json may carry a .py plugin's text: nas.load_model and `nas export-model`
run it only when it is the user's own file or with trust_code=True / --trust-code; otherwise one
line naming it, exit 2, the code not run and nothing written."""

import sys
from pathlib import Path

import pytest

import nas
from nas.models.folder import ARCH_FILE, TRAIN_FILE, WEIGHTS_FILE, io_dict, save_weights, write_json
from search_spaces import ArchSpec, TaskIO, build_model
from tests.cli_helpers import assert_one_line_error, invoke

IO = TaskIO(kind="tokens", num_classes=11, seq_len=8, vocab_size=11, causal=True, per_token=True)
ARCH = {"stem": {"type": "embed"}, "causal": True, "stages": [{"dim": 8, "blocks": [{"mixer": {"type": "softmax"}}]}]}


@pytest.fixture(autouse=True)
def forget_plugins():
    """The plugin modules a test loads are forgotten after it, as a new process would not have them."""
    before = set(sys.modules)
    yield
    for m in set(sys.modules) - before:
        if m.startswith(("mixer_nas_plugin_", "tplug_")):
            del sys.modules[m]


def _code(marker: Path) -> str:
    """A plugin whose only effect is a line appended to ``marker``: proof that its code ran."""
    return f"from pathlib import Path\n\nwith open({str(marker)!r}, 'a') as f:\n    f.write('ran\\n')\n"


def _folder(tmp_path: Path, plugins: list) -> Path:
    """A finished `nas train` folder (untrained weights) whose train.json names ``plugins``."""
    folder = tmp_path / "run"
    folder.mkdir()
    arch = ArchSpec.from_dict(ARCH)
    write_json(folder / ARCH_FILE, arch.to_dict())
    write_json(folder / TRAIN_FILE, {"io": io_dict(IO), "plugins": plugins})
    save_weights(build_model(arch, IO), folder / WEIGHTS_FILE)
    return folder


def _foreign(tmp_path: Path, marker: Path) -> dict:
    """A plugin record as another machine stored it: its file is not here."""
    return {"name": "evil.py", "path": str(tmp_path / "elsewhere" / "evil.py"), "code": _code(marker)}


def test_stored_code_is_refused_without_trust_and_runs_with_it(tmp_path):
    marker = tmp_path / "ran.txt"
    folder = _folder(tmp_path, [_foreign(tmp_path, marker)])
    with pytest.raises(nas.UserError) as e:
        nas.load_model(folder)
    assert str(e.value).startswith(f"{folder / TRAIN_FILE} carries plugin code that is not on this machine: "
                                   "evil.py (4 lines); nothing was run")
    assert "--trust-code" in str(e.value) and "trust_code=True" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    model = nas.load_model(folder, trust_code=True)
    assert marker.read_text() == "ran\n" and not model.training


def test_export_model_refuses_stored_code_without_trust_code(tmp_path):
    marker = tmp_path / "ran.txt"
    folder = _folder(tmp_path, [_foreign(tmp_path, marker)])
    before = sorted(p.name for p in folder.iterdir())
    r = invoke("export-model", folder, cwd=tmp_path)
    assert_one_line_error(r, "evil.py (4 lines)", "nothing was run", "--trust-code")
    assert not marker.exists() and sorted(p.name for p in folder.iterdir()) == before  # nothing written
    r = invoke("export-model", folder, "--trust-code", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert marker.exists() and (folder / "model.torchscript.pt").is_file()


def test_the_users_own_file_and_installed_modules_need_no_trust(tmp_path, monkeypatch):
    marker = tmp_path / "ran.txt"
    own = tmp_path / "own.py"
    own.write_text(_code(marker))
    (tmp_path / "tplug_installed.py").write_text(_code(marker))
    monkeypatch.syspath_prepend(str(tmp_path))  # "installed": importable here
    folder = _folder(tmp_path, [{"name": "own.py", "path": str(own), "code": own.read_text()},
                                {"name": "tplug_installed", "module": "tplug_installed"}])
    nas.load_model(folder)
    assert marker.read_text() == "ran\n" * 2  # both ran, no opt-in asked

    own.write_text(_code(marker) + "# edited since\n")  # the file here is not the stored code any more
    (tmp_path / "again").mkdir()
    other = _folder(tmp_path / "again", [{"name": "own.py", "path": str(own), "code": _code(tmp_path / "x.txt")}])
    with pytest.raises(nas.UserError, match=r"own\.py \(4 lines\)"):
        nas.load_model(other)
    assert not (tmp_path / "x.txt").exists()
