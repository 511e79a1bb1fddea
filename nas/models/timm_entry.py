"""The timm model entry ``mixer_nas``: any ArchSpec, built as timm builds its own models.

Importing this module registers the entry (``nas.load_model`` imports it, so does ``import
nas.models.timm_entry``; read-only commands never import timm through it)::

    import timm, nas.models.timm_entry
    model = timm.create_model("mixer_nas", arch="runs/s-3", checkpoint_path="runs/s-3/model.safetensors")

``arch``: a `nas train` folder, a path to an arch JSON file (a train.json beside it gives the
task I/O), a JSON string, a dict or an ArchSpec. ``io``: the task's I/O (a TaskIO or its dict),
needed when ``arch`` is not a folder. Weights come from timm's own ``checkpoint_path`` (the
folder's model.safetensors); there are no pretrained weights to download.
"""

from __future__ import annotations

from timm.models import register_model

from nas.models.folder import arch_and_io

__all__ = ["mixer_nas"]

_TIMM_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")  # passed by create_model, unused here


@register_model
def mixer_nas(pretrained: bool = False, arch=None, io=None, **kwargs):
    """A mixer-nas architecture (``arch``) for a task's I/O (``io``); see the module docstring."""
    from search_spaces import build_model

    if pretrained:
        raise ValueError("mixer_nas has no pretrained weights; pass checkpoint_path=<nas train folder>/model.safetensors")
    for k in _TIMM_KWARGS:
        kwargs.pop(k, None)
    if kwargs:
        raise TypeError(f"mixer_nas: unexpected arguments {sorted(kwargs)}; it takes arch= and io=")
    if arch is None:
        raise TypeError("mixer_nas: arch= is required (a `nas train` folder, an arch JSON file or dict)")
    spec, task_io = arch_and_io(arch, io)
    return build_model(spec, task_io)
