import dataclasses
import json

import pytest

from search_spaces import ArchSpec, ArchValidationError, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec


def _arch(mixer="softmax", params=None, dim=64, causal=True, stem=StemSpec("embed"), downsample="none",
          ffn=FFNSpec("mlp", 2), stages=1):
    block = BlockSpec(MixerSpec(mixer, params or {}), ffn)
    st = [StageSpec(dim, (block, block))]
    for _ in range(stages - 1):
        st.append(StageSpec(dim, (block,), downsample=downsample))
    return ArchSpec(stem=stem, stages=tuple(st), causal=causal)


def test_json_round_trip_and_canonical():
    a = _arch(params={"heads": 2})
    s = a.to_json()
    assert ArchSpec.from_json(s) == a
    assert ArchSpec.from_json(s).to_json() == s
    assert json.loads(s) == json.loads(json.dumps(a.to_dict(), sort_keys=True))
    assert s == json.dumps(json.loads(s), sort_keys=True, separators=(",", ":"))


def test_arch_id_stable_and_distinguishing():
    a, b = _arch(params={"heads": 2}), _arch(params={"heads": 2})
    assert a.arch_id == b.arch_id and len(a.arch_id) == 12
    assert a.arch_id != _arch(params={"heads": 4}).arch_id
    assert _arch(ffn=FFNSpec("mlp", 2)).arch_id == _arch(ffn=FFNSpec("mlp", 2.0)).arch_id


def test_frozen():
    a = _arch()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.causal = False


@pytest.mark.parametrize("arch,path,fragment", [
    (_arch(params={"heads": 6}, dim=128), "stages[0].blocks[0].mixer.heads", "6 does not divide dim 128"),
    (_arch(mixer="nope"), "stages[0].blocks[0].mixer.type", "unknown mixer"),
    (_arch(mixer="gfnet"), "stages[0].blocks[0].mixer.type", "does not support causal"),
    (_arch(params={"bogus": 1}), "stages[0].blocks[0].mixer.bogus", "no parameter"),
    (_arch(params={"heads": "two"}), "stages[0].blocks[0].mixer.heads", "'two' is not allowed (an int"),
    (_arch(dim=0), "stages[0].dim", ">= 1"),
    (_arch(ffn=FFNSpec("moe", 2)), "stages[0].blocks[0].ffn.type", "unknown FFN"),
    (_arch(stem=StemSpec("conv")), "stem.type", "not one of"),
    (_arch(causal=True, stages=2, downsample="merge"), "stages[1].downsample", "causal"),
    (_arch(causal=False, stem=StemSpec("patch1d", 4), stages=2, downsample="pool"), "stages[1].downsample", "not one of"),
])
def test_validate_names_path_and_rule(arch, path, fragment):
    with pytest.raises(ArchValidationError) as e:
        arch.validate()
    assert str(e.value).startswith(path + ":"), str(e.value)
    assert fragment in str(e.value)


def test_valid_arch_passes():
    assert _arch(params={"heads": 4}).validate()
    assert _arch(mixer="gfnet", causal=False, stem=StemSpec("patch1d", 4), stages=2, downsample="merge").validate()


def test_summary_mentions_layers():
    s = _arch(params={"heads": 2}).summary()
    assert "softmax(h=2)+mlp x2" in s and "[causal]" in s


def test_dominant_family():
    hyena = BlockSpec(MixerSpec("hyena"))
    attn = BlockSpec(MixerSpec("softmax", {"heads": 2}))
    mk = lambda *blocks: ArchSpec(StemSpec("embed"), (StageSpec(32, blocks),), causal=True)  # noqa: E731
    assert mk(hyena, hyena, attn).dominant_family() == "hyena"
    assert mk(hyena, attn).dominant_family() == "mixed"
    assert mk(attn).dominant_family() == "attention"
