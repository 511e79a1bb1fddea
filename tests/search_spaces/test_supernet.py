"""The supernet: every path runs as its stand-alone model, widths are slices of the widest."""

import pytest
import torch
import torch.nn.functional as F

from search_spaces import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec, TaskIO, build_model
from search_spaces.mixer_registry import get_mixer_info, list_mixers
from search_spaces.space import parse_space
from search_spaces.supernet import Supernet
from search_spaces.supernet_paths import extreme_arch, random_arch

TOK = TaskIO("tokens", 7, seq_len=6, vocab_size=11, causal=True, per_token=True)
IMG = TaskIO("image", 5, image_size=(8, 8), in_channels=2)
DIMS = (8, 16)


def _space(io: TaskIO, mixers: list, *, second_stage: bool):
    stages = [{"depth": [1, 2], "dim": list(DIMS), "mixer": {"per_layer": True, "choices": {m: {} for m in mixers}},
               "ffn": {"type": ["mlp", "glu", "none"], "ratio": [1, 2]}}]
    if second_stage:
        stages.append({"depth": 1, "dim": list(DIMS), "downsample": ["merge", "conv"],
                       "mixer": {"choices": {"softmax": {"heads": [1, 2]}}}})
    raw = {"task": {"name": "tiny"}, "arch": {"stem": {"patch": [2, 4]} if io.kind == "image" else {},
                                              "stages": stages}}
    return parse_space(raw).bind(io)


CAUSAL = [m for m in list_mixers() if get_mixer_info(m).causal]


@pytest.fixture(scope="module")
def image_net():
    torch.manual_seed(0)
    return Supernet(_space(IMG, list_mixers(), second_stage=True)).eval()


@pytest.fixture(scope="module")
def causal_net():
    torch.manual_seed(0)
    return Supernet(_space(TOK, CAUSAL, second_stage=False)).eval()


def _arch(io, mixer, dim, *, ffn=FFNSpec("glu", 1.0), second=None, patch=2):
    blocks = (BlockSpec(MixerSpec(mixer), ffn), BlockSpec(MixerSpec(mixer), FFNSpec("mlp", 2.0)))
    stages = [StageSpec(dim, blocks)]
    if second:
        stages.append(StageSpec(second[0], (BlockSpec(MixerSpec("softmax", {"heads": 2})),), second[1]))
    stem = StemSpec("patch2d", patch) if io.kind == "image" else StemSpec("embed")
    return ArchSpec(stem, tuple(stages), causal=io.causal)


def _input(io):
    if io.kind == "image":
        return torch.randn(2, *io.input_shape(2)[1:], generator=torch.Generator().manual_seed(3))
    return torch.randint(0, io.vocab_size, (2, io.seq_len), generator=torch.Generator().manual_seed(3))


def _standalone(net, arch):
    """build_model(arch) with the supernet's weights loaded through its state_dict."""
    model = build_model(arch, net.io)
    model.load_state_dict(net.extract(arch).state_dict())
    return model.eval()


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("mixer", list_mixers())
def test_image_path_equals_standalone_model(image_net, mixer, dim):
    arch = _arch(IMG, mixer, dim, second=(16 if dim == 8 else 8, "merge" if dim == 8 else "conv"))
    x = _input(IMG)
    with torch.no_grad():
        assert torch.equal(image_net(x, arch), _standalone(image_net, arch)(x))


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("mixer", CAUSAL)
def test_causal_path_equals_standalone_model(causal_net, mixer, dim):
    arch = _arch(TOK, mixer, dim)
    x = _input(TOK)
    with torch.no_grad():
        assert torch.equal(causal_net(x, arch), _standalone(causal_net, arch)(x))


def test_random_paths_equal_standalone_models(causal_net):
    gen = torch.Generator().manual_seed(5)
    x = _input(TOK)
    for _ in range(6):
        arch = random_arch(causal_net.space, gen)
        with torch.no_grad():
            assert torch.equal(causal_net(x, arch), _standalone(causal_net, arch)(x))


def test_narrow_qkv_is_the_hand_sliced_wide_one(causal_net):
    """Q, K and V of a width-8 softmax are each the top-left 8 x 8 of the width-16 Q, K and V."""
    wide = causal_net.extract(_arch(TOK, "softmax", 16)).stages[0][0].mixer.qkv
    narrow = causal_net.extract(_arch(TOK, "softmax", 8)).stages[0][0].mixer.qkv
    hand = wide.weight.view(3, 16, 16)[:, :8, :8].reshape(24, 8)
    x = torch.randn(3, 8)
    assert torch.equal(narrow(x), F.linear(x, hand))


def test_narrow_ffn_is_the_hand_sliced_wide_one(causal_net):
    """An MLP of ratio 1 at width 8 is the top-left block of the ratio-2 MLP at width 16; a GLU's
    gate and value halves are sliced each."""
    wide = causal_net.extract(_arch(TOK, "conv", 16, ffn=FFNSpec("mlp", 2.0))).stages[0][0].ffn
    narrow = causal_net.extract(_arch(TOK, "conv", 8, ffn=FFNSpec("mlp", 1.0))).stages[0][0].ffn
    x = torch.randn(3, 8)
    hand = F.linear(F.gelu(F.linear(x, wide.fc1.weight[:8, :8], wide.fc1.bias[:8])), wide.fc2.weight[:8, :8],
                    wide.fc2.bias[:8])
    assert torch.equal(narrow(x), hand)
    wide_glu = causal_net.extract(_arch(TOK, "conv", 16, ffn=FFNSpec("glu", 2.0))).stages[0][0].ffn
    narrow_glu = causal_net.extract(_arch(TOK, "conv", 8, ffn=FFNSpec("glu", 1.0))).stages[0][0].ffn
    assert torch.equal(narrow_glu.fc1.weight, wide_glu.fc1.weight.view(2, 16, 16)[:, :4, :8].reshape(8, 8))


def test_paths_share_and_train_the_same_tensors(causal_net):
    """A path's gradient reaches the shared tensor, inside its slice only."""
    net = causal_net
    net.zero_grad(set_to_none=True)
    net(_input(TOK), _arch(TOK, "softmax", 8)).sum().backward()
    grad = net.weights["s0/b0/mixer/softmax/qkv/weight"].grad.view(3, 16, 16)
    assert grad[:, :8, :8].abs().sum() > 0
    assert grad[:, 8:].abs().sum() == 0 and grad[:, :, 8:].abs().sum() == 0
    net.zero_grad(set_to_none=True)


def test_one_path_per_architecture(causal_net):
    arch = _arch(TOK, "gqa", 16)
    path = causal_net.path_for(arch)
    assert path == causal_net.path_for(ArchSpec.from_json(arch.to_json()))
    assert path != causal_net.path_for(_arch(TOK, "gqa", 8))
    assert any(k.startswith("s0/b1/mixer/gqa/") for k in path.keys())


@pytest.mark.parametrize("change", ["width", "mixer", "depth"])
def test_architectures_outside_the_space_have_no_path(causal_net, change):
    arch = {"width": _arch(TOK, "softmax", 32), "mixer": _arch(IMG, "fnet", 8)}.get(change)
    if change == "depth":
        arch = ArchSpec(StemSpec("embed"), (StageSpec(8, (BlockSpec(MixerSpec("conv")),) * 3),), causal=True)
    with pytest.raises(ValueError):
        causal_net.path_for(arch)


def test_seeded_and_leaves_the_rng_alone():
    space = _space(TOK, ["softmax", "hyena"], second_stage=False)
    torch.manual_seed(1)
    a = Supernet(space)
    torch.manual_seed(1)
    b = Supernet(space)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    state = torch.get_rng_state()
    a.extract(extreme_arch(space, "largest"))
    a(_input(TOK), extreme_arch(space, "smallest"))
    assert torch.equal(torch.get_rng_state(), state)


def test_sandwich_paths_are_the_extremes(causal_net):
    space = causal_net.space
    largest, smallest = extreme_arch(space, "largest"), extreme_arch(space, "smallest")
    assert (largest.depth, largest.stages[0].dim) == (2, 16)
    assert (smallest.depth, smallest.stages[0].dim) == (1, 8)
    assert smallest.stages[0].blocks[0].ffn.type == "none"
    assert largest.stages[0].blocks[0].ffn == FFNSpec("mlp", 2.0)
