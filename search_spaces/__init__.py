"""What can be searched: ArchSpec, the mixer and FFN registries, the model builder, space files."""

from search_spaces.arch import (
    ArchSpec,
    ArchValidationError,
    BlockSpec,
    FFNSpec,
    MixerSpec,
    StageSpec,
    StemSpec,
)
from search_spaces.builder import build_model
from search_spaces.ffn import list_ffns
from search_spaces.registry import Mixer, Param, get_mixer, get_mixer_info, list_mixers, register_mixer
from search_spaces.sampling import sample
from search_spaces.space import Space, SpaceError, list_spaces, load_space
from search_spaces.task_io import TaskIO

__all__ = [
    "ArchSpec",
    "ArchValidationError",
    "BlockSpec",
    "FFNSpec",
    "Mixer",
    "MixerSpec",
    "Param",
    "Space",
    "SpaceError",
    "StageSpec",
    "StemSpec",
    "TaskIO",
    "build_model",
    "get_mixer",
    "get_mixer_info",
    "list_ffns",
    "list_mixers",
    "list_spaces",
    "load_space",
    "register_mixer",
    "sample",
]
