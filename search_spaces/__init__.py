"""What can be searched: ArchSpec, the mixer and FFN registries, the model builder, space files.

The public names below are imported on first use (PEP 562). Reading a space (``load_space``,
``list_mixers``, ``get_mixer_info``, ``ArchSpec``) imports no torch: the registries hold plain data,
and a mixer's or FFN's module is imported when it is built (``get_mixer``, ``build_model``).
"""

from kernels.lazy import lazy_exports

_EXPORTS = {
    "ArchSpec": "search_spaces.arch",
    "ArchValidationError": "search_spaces.arch",
    "BlockSpec": "search_spaces.arch",
    "FFNSpec": "search_spaces.arch",
    "MixerSpec": "search_spaces.arch",
    "StageSpec": "search_spaces.arch",
    "StemSpec": "search_spaces.arch",
    "build_model": "search_spaces.builder",
    "list_ffns": "search_spaces.ffn",
    "register_ffn": "search_spaces.ffn",
    "Mixer": "search_spaces.mixer",
    "Param": "search_spaces.mixer_registry",
    "Registry": "kernels.registry",
    "get_mixer": "search_spaces.mixer_registry",
    "get_mixer_info": "search_spaces.mixer_registry",
    "list_mixers": "search_spaces.mixer_registry",
    "register_mixer": "search_spaces.mixer_registry",
    "sample": "search_spaces.sampling",
    "Space": "search_spaces.space",
    "SpaceError": "search_spaces.space",
    "list_spaces": "search_spaces.space",
    "load_space": "search_spaces.space",
    "TaskIO": "search_spaces.task_io",
    "UnknownName": "kernels.registry",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
