"""Each built-in mixer is declared once, as data in search_spaces/mixers/__init__.py that names its class
(``module:Class``); a plugin's mixer is declared once, by the decorator on its class."""

import ast
from collections import Counter
from pathlib import Path

import pytest

from search_spaces import Mixer, Param, get_mixer, get_mixer_info, list_mixers, register_mixer
from search_spaces.mixer_registry import MIXERS, declare_mixer
from search_spaces.mixers import rules

MIXERS_DIR = Path(__file__).resolve().parents[2] / "search_spaces" / "mixers"
REGISTERING = {"declare_mixer", "register_mixer"}


def _registering_calls(path: Path) -> list[ast.Call]:
    """The calls of declare_mixer / register_mixer in the file, decorators included."""
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in REGISTERING]


@pytest.mark.parametrize("name", list_mixers())
def test_each_declared_mixer_resolves_to_the_class_it_names(name):
    info = get_mixer_info(name)
    cls = get_mixer(name)
    assert issubclass(cls, Mixer) and (cls.__module__, cls.__qualname__) == (info.module, info.class_name)
    assert info.target == f"{info.module}:{info.class_name}"
    assert cls.supports_causal is info.causal


def test_every_built_in_is_declared_exactly_once_and_nowhere_else():
    declared = [call.args[0].value for call in _registering_calls(MIXERS_DIR / "__init__.py")]
    assert [name for name, n in Counter(declared).items() if n > 1] == []
    assert sorted(declared) == list_mixers()
    modules = [p for p in sorted(MIXERS_DIR.glob("*.py")) if p.name != "__init__.py"]
    assert len(modules) >= len(declared)
    assert {p.name: len(_registering_calls(p)) for p in modules if _registering_calls(p)} == {}


def test_a_mixer_declared_twice_is_an_error_and_changes_nothing():
    before = get_mixer_info("softmax")

    class Other(Mixer):
        pass

    with pytest.raises(ValueError, match="mixer 'softmax' is registered twice"):
        declare_mixer("softmax", "search_spaces.mixers.conv:DepthwiseConv", causal=True)
    with pytest.raises(ValueError, match="mixer 'softmax' is registered twice"):
        register_mixer("softmax", params={}, causal=True)(Other)
    assert get_mixer_info("softmax") is before and get_mixer("softmax").__name__ == "SoftmaxAttention"


def test_register_mixer_is_one_whole_declaration():
    with pytest.raises(TypeError, match="causal"):
        register_mixer("mine", params={})
    with pytest.raises(ValueError, match="'module:Class'"):
        declare_mixer("mine", "search_spaces.mixers.conv", causal=True)
    assert "mine" not in MIXERS

    @register_mixer("mine", params={"k": Param(3, int, low=1)}, causal=False, family="conv")
    class Mine(Mixer):  # defined in a function: found through the declaration, not by its name
        """Mine."""

    try:
        info = get_mixer_info("mine")
        assert get_mixer("mine") is Mine and Mine.supports_causal is False
        assert (info.module, info.class_name, info.defaults(), info.family) == (__name__, Mine.__qualname__,
                                                                                  {"k": 3}, "conv")
        with pytest.raises(ValueError, match="does not support causal use"):
            Mine(8, causal=True)
    finally:
        MIXERS.unregister("mine")


def test_a_declaration_whose_class_is_missing_fails_when_the_class_is_asked_for():
    declare_mixer("ghost", "search_spaces.mixers.conv:NoSuchClass", causal=True)
    try:
        assert get_mixer_info("ghost").defaults() == {}  # the data is there without the class
        with pytest.raises(LookupError, match="declared as search_spaces.mixers.conv:NoSuchClass"):
            get_mixer("ghost")
    finally:
        MIXERS.unregister("ghost")


def test_string_choices_are_the_ones_the_classes_take():
    assert get_mixer_info("glu").params["act"].choices == rules.GLU_GATES
    assert get_mixer_info("linear").params["feature"].choices == rules.LINEAR_FEATURES
    for act in rules.GLU_GATES:
        get_mixer("glu")(8, act=act)
    for feature in rules.LINEAR_FEATURES:
        get_mixer("linear")(8, heads=2, feature=feature)
