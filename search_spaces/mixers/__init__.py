"""The built-in token mixers, each declared once, here, as data: the class it is
(``"module:Class"``, imported when the class is first needed, so reading a space or a study's
results imports no torch), its parameters with their defaults and allowed values, its rules,
whether it supports causal use or needs a 2-D grid, and its family. The classes in the modules
beside this one carry no declaration of their own.

Add a built-in mixer by writing its module here and declaring it below (a plugin's mixer is
declared by the decorator on its class: ``@register_mixer(name, params=..., causal=...)``, see
docs/extending.md).
"""

from search_spaces.mixer_registry import Param, declare_mixer, divides
from search_spaces.mixers.rules import (
    GLU_GATES,
    LINEAR_FEATURES,
    SINGLE_HEAD_RATIOS,
    diff_heads_rule,
    kv_heads_divide_heads,
    moh_heads_rule,
    partial_dims,
    sqa_heads_rule,
    strip_heads_rule,
    topk_within_regions,
)

# parameters many attention mixers share
HEADS = Param(4, int, low=1, counts_heads=True, doc="attention heads; must divide the width")
QKV_BIAS = Param(False, bool, doc="bias on the Q/K/V projection")

declare_mixer(
    "binary",
    f"{__name__}.binary:BinaryAttention",
    causal=True,
    params={
        "heads": HEADS,
        "max_rel": Param(8, int, low=0, high=512, doc="relative-position bias reach in tokens (0: no bias)"),
        "qkv_bias": QKV_BIAS,
    },
    rules=(divides("heads"),),
    family="attention",
)

declare_mixer(
    "conv",
    f"{__name__}.conv:DepthwiseConv",
    causal=True,
    params={
        "kernel_size": Param(3, int, choices=(3, 5, 7, 9), doc="taps per axis"),
    },
    family="conv",
)

declare_mixer(
    "diff",
    f"{__name__}.diff:DifferentialAttention",
    causal=True,
    params={
        "heads": Param(4, int, low=1, counts_heads=True, doc="signal heads; 2 * heads must divide the width"),
        "noise_heads": Param(2, int, low=1, counts_heads=True,
                             doc="noise-control maps, each shared by heads / noise_heads signal heads "
                                 "(= heads: balanced DIFF attention)"),
        "lambda_init": Param(0.8, float, low=0.0, high=0.9, doc="lambda_init (DIFF: 0.8 - 0.6 exp(-0.3 (l - 1)))"),
        "head_norm": Param(True, bool, doc="per-head RMSNorm times (1 - lambda_init) after the difference"),
    },
    rules=(diff_heads_rule,),
    family="attention",
)

declare_mixer(
    "fnet",
    f"{__name__}.fnet:FourierMixing",
    causal=False,
    params={
        "norm": Param("ortho", str, choices=("ortho", "backward"),
                      doc="FFT scaling: 'ortho' (1/sqrt(size), keeps the scale) or 'backward' (none, as in FNet)"),
    },
    family="spectral",
)

declare_mixer(
    "gfnet",
    f"{__name__}.gfnet:GlobalFilter",
    causal=False,
    params={
        "filter_size": Param(32, int, low=2, high=1024,
                             doc="learned frequency bins per axis; resampled to the input's length"),
    },
    family="spectral",
)

declare_mixer(
    "glu",
    f"{__name__}.glu:GLUMixer",
    causal=True,
    params={
        "ratio": Param(2.0, float, choices=(1.0, 2.0, 3.0, 4.0), doc="hidden width / model width"),
        "act": Param("gelu", str, choices=GLU_GATES,
                     doc="gate activation: sigmoid (GLU), gelu (GEGLU), silu (SwiGLU), relu (ReGLU)"),
        "bias": Param(True, bool, doc="biases on the projections"),
    },
    family="mlp",
)

declare_mixer(
    "gqa",
    f"{__name__}.gqa:GroupedQueryAttention",
    causal=True,
    params={
        "heads": Param(4, int, low=1, counts_heads=True, doc="query heads; must divide the width"),
        "kv_heads": Param(2, int, low=1, counts_heads=True, doc="key/value heads; must divide heads (1 = multi-query)"),
        "qkv_bias": Param(False, bool, doc="bias on the Q/K/V projections"),
    },
    rules=(divides("heads"), kv_heads_divide_heads),
    family="attention",
)

declare_mixer(
    "hilo",
    f"{__name__}.hilo:HiLo",
    causal=False,
    params={
        "heads": Param(4, int, low=1, counts_heads=True, doc="total heads; must divide the width"),
        "alpha": Param(0.5, float, low=0.0, high=1.0,
                       doc="fraction of heads in the Lo-Fi (pooled global) group; int(heads * alpha) heads"),
        "window": Param(2, int, choices=(2, 3, 4, 7, 8),
                        doc="side of the Hi-Fi window and the Lo-Fi pooling (tokens in 1-D)"),
        "qkv_bias": Param(True, bool, doc="bias on the Q/K/V projections"),
    },
    rules=(divides("heads"),),
    family="local",
)

declare_mixer(
    "hyena",
    f"{__name__}.hyena:Hyena",
    causal=True,
    params={
        "order": Param(2, int, choices=(2, 3), doc="number of gating steps (long convolutions)"),
        "filter_dim": Param(16, int, low=4, high=256, doc="width of the implicit filter MLP"),
        "short_kernel": Param(3, int, choices=(1, 3, 5, 7), doc="depthwise short conv on projections"),
    },
    family="hyena",
)

declare_mixer(
    "hyena2d",
    f"{__name__}.hyena2d:Hyena2D",
    causal=False,
    needs_2d=True,
    params={
        "order": Param(2, int, choices=(2, 3), doc="number of gating steps (long convolutions)"),
        "filter_dim": Param(16, int, low=4, high=256, doc="width of the implicit filter MLP"),
        "short_kernel": Param(3, int, choices=(1, 3, 5), doc="depthwise short 2-D conv on projections"),
    },
    family="hyena",
)

declare_mixer(
    "linear",
    f"{__name__}.linear:LinearAttention",
    causal=True,
    params={
        "heads": HEADS,
        "feature": Param("elu", str, choices=LINEAR_FEATURES, doc="feature map phi: elu(x)+1 or relu"),
        "cosformer": Param(False, bool, doc="cosFormer cos(pi/2 (i-j)/N) re-weighting of the kernel"),
        "qkv_bias": QKV_BIAS,
    },
    rules=(divides("heads"),),
    family="linear",
)

declare_mixer(
    "local",
    f"{__name__}.local:LocalAttention",
    causal=True,
    params={
        "heads": HEADS,
        "window": Param(7, int, choices=(3, 5, 7, 9, 11, 13),
                        doc="keys per axis in the window (causal 1-D: keys at or before the query)"),
        "dilation": Param(1, int, choices=(1, 2, 3, 4), doc="gap between window positions (DiNAT)"),
        "qkv_bias": Param(True, bool, doc="bias on the Q/K/V projection"),
    },
    rules=(divides("heads"),),
    family="local",
)

declare_mixer(
    "moh",
    f"{__name__}.moh:MixtureOfHeadAttention",
    causal=True,
    params={
        "heads": Param(4, int, low=2, counts_heads=True,
                       doc="attention heads (shared + routed); must divide the width"),
        "shared": Param(1, int, low=0, counts_heads=True, doc="heads every token uses"),
        "topk": Param(2, int, low=1, counts_heads=True, doc="routed heads each token activates"),
        "qkv_bias": QKV_BIAS,
    },
    rules=(divides("heads"), moh_heads_rule),
    family="attention",
)

declare_mixer(
    "routing",
    f"{__name__}.routing:BiLevelRoutingAttention",
    causal=False,
    params={
        "heads": HEADS,
        "regions": Param(2, int, low=1, high=16, doc="regions per grid side S (S^2 regions; 1-D: S^2 chunks)"),
        "topk": Param(2, int, low=1, doc="regions each region routes its queries to"),
        "qkv_bias": QKV_BIAS,
    },
    rules=(divides("heads"), topk_within_regions),
    family="attention",
)

declare_mixer(
    "single_head",
    f"{__name__}.single_head:SingleHeadAttention",
    causal=True,
    params={
        "ratio": Param(0.25, float, choices=SINGLE_HEAD_RATIOS, doc="fraction r of the channels the single head sees"),
        "qk_dim": Param(16, int, choices=(8, 16, 32, 64), doc="query/key width of the single head"),
    },
    rules=(partial_dims,),
    family="attention",
)

declare_mixer(
    "softmax",
    f"{__name__}.softmax:SoftmaxAttention",
    causal=True,
    params={
        "heads": HEADS,
        "qkv_bias": QKV_BIAS,
    },
    rules=(divides("heads"),),
    family="attention",
)

declare_mixer(
    "sqa",
    f"{__name__}.sqa:SparseQueryAttention",
    causal=True,
    params={
        "heads": Param(4, int, low=1, counts_heads=True,
                       doc="head budget H: sets the head width dim / H; must divide the width"),
        "q_heads": Param(2, int, low=1, counts_heads=True, doc="query heads H_q <= H: score FLOPs scale with H_q / H"),
        "kv_heads": Param(2, int, low=1, counts_heads=True, doc="key/value heads H_kv; must divide q_heads"),
        "qkv_bias": Param(False, bool, doc="bias on the Q/K/V projections"),
    },
    rules=(divides("heads"), sqa_heads_rule),
    family="attention",
)

declare_mixer(
    "strip",
    f"{__name__}.strip:StripSelfAttention",
    causal=False,
    params={
        "heads": Param(2, int, low=1, counts_heads=True, doc="attention heads"),
        "sr": Param(2, int, choices=(1, 2, 4, 8), doc="K/V spatial reduction stride per axis "
                                                     "(K/V tokens: N / sr in 1-D, N / sr^2 on a grid)"),
        "qk_ratio": Param(2, int, choices=(1, 2, 4, 8), doc="Q/K channel compression: Q/K width = head_dim / qk_ratio"),
    },
    rules=(strip_heads_rule,),
    family="attention",
)

declare_mixer(
    "subsampled",
    f"{__name__}.subsampled:SubsampledAttention",
    causal=True,
    params={
        "heads": HEADS,
        "groups": Param(2, int, choices=(1, 2, 4, 8), doc="training-time subsampling factor: tokens attend "
                                                          "within one of this many random disjoint subsets"),
        "qkv_bias": QKV_BIAS,
    },
    rules=(divides("heads"),),
    family="attention",
)
