import pytest
import torch

from search_spaces import (
    ArchSpec,
    ArchValidationError,
    BlockSpec,
    FFNSpec,
    MixerSpec,
    StageSpec,
    StemSpec,
    TaskIO,
    build_model,
)

TOK = TaskIO(kind="tokens", num_classes=20, seq_len=12, vocab_size=20, causal=True, per_token=True)
SIG = TaskIO(kind="signal", num_classes=10, seq_len=40, in_channels=1)
IMG = TaskIO(kind="image", num_classes=10, image_size=(16, 16), in_channels=3)


def blk(mixer="softmax", **p):
    return BlockSpec(MixerSpec(mixer, p), FFNSpec("glu", 2))


def test_token_model_is_causal_end_to_end():
    arch = ArchSpec(StemSpec("embed"), (StageSpec(32, (blk(heads=2), blk("hyena"))),
                                        StageSpec(48, (blk(heads=4),))), causal=True)
    m = build_model(arch, TOK).eval()
    x = torch.randint(0, 20, (2, 12))
    y = m(x)
    assert y.shape == (2, 12, 20)
    x2 = x.clone()
    x2[:, 6:] = (x2[:, 6:] + 1) % 20
    assert torch.allclose(m(x2)[:, :6], y[:, :6], atol=1e-5)


@pytest.mark.parametrize("down", ["merge", "conv"])
def test_signal_stages_downsample(down):
    arch = ArchSpec(StemSpec("patch1d", 4, 2), (StageSpec(16, (blk("gfnet"),)),
                                                 StageSpec(32, (blk(heads=2),), downsample=down)))
    m = build_model(arch, SIG)
    assert m(torch.randn(3, 1, 40)).shape == (3, 10)
    seen = []
    m.stages[1][0].mixer.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    m(torch.randn(1, 1, 40))
    assert seen[0] == (1, 10, 32)  # (40 - 4) / 2 + 1 = 19 tokens -> padded to 20 -> 10


@pytest.mark.parametrize("down", ["merge", "conv"])
def test_image_stages_pass_grid(down):
    arch = ArchSpec(StemSpec("patch2d", 4), (StageSpec(16, (blk("gfnet"),)),
                                              StageSpec(32, (blk("gfnet"),), downsample=down)))
    m = build_model(arch, IMG)
    hws = []
    for stage in m.stages:
        stage[0].mixer.register_forward_hook(lambda mod, inp, out: hws.append(inp[1]))
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert hws == [(4, 4), (2, 2)]


def test_incompatible_task_refused():
    arch = ArchSpec(StemSpec("embed"), (StageSpec(32, (blk(heads=2),)),), causal=True)
    with pytest.raises(ArchValidationError, match="^stem.type"):
        build_model(arch, SIG)
    with pytest.raises(ArchValidationError, match="^causal"):
        build_model(ArchSpec(StemSpec("embed"), arch.stages, causal=False), TOK)


def test_post_norm_and_no_ffn():
    b = BlockSpec(MixerSpec("softmax", {"heads": 2}), FFNSpec("none"), norm="post")
    m = build_model(ArchSpec(StemSpec("embed"), (StageSpec(16, (b,)),), causal=True), TOK)
    assert m.stages[0][0].ffn is None and m.stages[0][0].post
    assert m(torch.randint(0, 20, (1, 12))).shape == (1, 12, 20)
