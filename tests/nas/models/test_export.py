"""Export of every registered mixer to every format (nas.models.export), and the documented list of
those that do not export; nas.generate; the arch/I/O forms that nas.load_model and timm accept."""

import re
from pathlib import Path

import pytest
import torch

import nas
from nas.errors import UserError
from nas.models.export import FORMATS, NOT_EXPORTABLE, ExportError, export_model, missing_packages
from nas.models.folder import arch_and_io
from search_spaces import ArchSpec, TaskIO, build_model, get_mixer_info, list_mixers

DOC = Path(__file__).resolve().parents[3] / "docs" / "training.md"
CASES = [(fmt, name) for fmt in FORMATS for name in list_mixers()]


def tiny_model(mixer: str, vocab: int = 11, seq_len: int = 16):
    """One block of ``mixer`` (its default parameters) at width 16: a causal token model for a
    causal mixer, a classifier of 8x8 images for a 2-D one, a token classifier otherwise."""
    info = get_mixer_info(mixer)
    if info.needs_2d:
        io, stem = TaskIO(kind="image", num_classes=3, image_size=(8, 8)), {"type": "patch2d", "patch": 2}
    else:
        io = TaskIO(kind="tokens", num_classes=vocab, seq_len=seq_len, vocab_size=vocab, causal=info.causal,
                    per_token=info.causal)
        stem = {"type": "embed"}
    arch = {"stem": stem, "causal": io.causal, "stages": [{"dim": 16, "blocks": [
        {"mixer": {"type": mixer, "params": {}}, "ffn": {"type": "mlp", "ratio": 2}}]}]}
    torch.manual_seed(0)
    return build_model(ArchSpec.from_dict(arch), io).eval()


@pytest.mark.parametrize("fmt,mixer", CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_each_mixer_exports_unless_listed(fmt, mixer, tmp_path):
    if missing_packages(fmt):
        pytest.skip(f"{fmt} needs {missing_packages(fmt)} (the test extra installs them)")
    model = tiny_model(mixer)
    if mixer in NOT_EXPORTABLE[fmt]:
        with pytest.raises(ExportError, match=f"{fmt} export failed: .*mixer {mixer} is known not to export"):
            export_model(model, fmt, tmp_path / "m")
        assert not (tmp_path / "m").exists()
        return
    done = export_model(model, fmt, tmp_path / "m")
    assert (tmp_path / "m").stat().st_size > 0
    if fmt == "torchscript" or done["max_abs_diff"] is not None:  # checked on a batch of another size
        assert done["max_abs_diff"] <= 1e-4


def _documented() -> dict:
    """{(mixer, format): reason} from the table in docs/training.md."""
    text = DOC.read_text().split("### Mixers that do not export", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.+?) \|$", text, flags=re.M)
    return {(m, f): why for m, f, why in rows}


def test_the_documented_list_is_the_one_tested():
    listed = {(m, f) for f, by_mixer in NOT_EXPORTABLE.items() for m in by_mixer}
    assert set(_documented()) == listed
    assert listed  # the table was found and read


def test_a_missing_exporter_package_is_named(monkeypatch, tmp_path):
    import nas.models.export as me

    monkeypatch.setattr(me, "missing_packages", lambda fmt: ["onnxscript"])
    with pytest.raises(ExportError, match=r"needs the package onnxscript, not installed here \(pip install"):
        export_model(tiny_model("softmax"), "onnx", tmp_path / "m.onnx")


def test_generate_is_seeded_and_slides_past_the_context():
    model = tiny_model("softmax", vocab=256, seq_len=8)
    text = nas.generate(model, "import os\nimport", 20, seed=3)  # a prompt longer than the 8-byte context
    assert text.startswith("import os\nimport") and text == nas.generate(model, "import os\nimport", 20, seed=3)
    ids = nas.generate(model, [1, 2, 3], 12, temperature=0)
    assert ids[:3] == [1, 2, 3] and len(ids) == 15
    with torch.no_grad():  # greedy: each token is the argmax given the last 8 before it
        for i in range(3, 15):
            window = torch.tensor([ids[max(0, i - 8):i]])
            assert ids[i] == int(model(window)[0, -1].argmax())
    assert nas.generate(model, [1, 2, 3], 12, top_k=1, seed=5) == ids


def test_generate_refuses_what_it_cannot_sample():
    with pytest.raises(ValueError, match="vocabulary of 256"):
        nas.generate(tiny_model("softmax", vocab=11), "abc", 3)
    with pytest.raises(ValueError, match="causal per-token model"):
        nas.generate(tiny_model("fnet"), [1, 2], 3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        nas.generate(tiny_model("softmax", vocab=11), [1, 11], 3)


def test_arch_and_io_accept_every_form(tmp_path):
    model = tiny_model("softmax")
    d = model.arch.to_dict()
    (tmp_path / "a.json").write_text(model.arch.to_json())
    for form in (model.arch, d, model.arch.to_json(), str(tmp_path / "a.json"), tmp_path / "a.json"):
        spec, io = arch_and_io(form, model.io)
        assert spec.arch_id == model.arch.arch_id and io == model.io
    with pytest.raises(UserError, match="no task I/O"):
        arch_and_io(d)
    with pytest.raises(UserError, match="a.json: no such file"):
        arch_and_io(tmp_path / "b" / "a.json", model.io)


def test_load_model_names_an_unfinished_folder(tmp_path):
    (tmp_path / "train.json").write_text("{}")
    with pytest.raises(UserError, match="has not finished"):
        nas.load_model(tmp_path)
    with pytest.raises(UserError, match="not a `nas train` folder"):
        nas.load_model(tmp_path.parent)
