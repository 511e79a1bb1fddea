"""Built-in mixers are declared as data (search_spaces/mixers/__init__.py) and their classes bound by
``@register_mixer(name)`` in the module each declaration names."""

import pytest

from search_spaces import Mixer, get_mixer, get_mixer_info, list_mixers, register_mixer
from search_spaces.mixers import rules


@pytest.mark.parametrize("name", list_mixers())
def test_each_declared_mixer_is_the_class_its_module_registers(name):
    info = get_mixer_info(name)
    cls = get_mixer(name)
    assert issubclass(cls, Mixer) and cls.__module__ == info.module
    assert cls.supports_causal is info.causal


def test_string_choices_are_the_ones_the_classes_take():
    assert get_mixer_info("glu").params["act"].choices == rules.GLU_GATES
    assert get_mixer_info("linear").params["feature"].choices == rules.LINEAR_FEATURES
    for act in rules.GLU_GATES:
        get_mixer("glu")(8, act=act)
    for feature in rules.LINEAR_FEATURES:
        get_mixer("linear")(8, heads=2, feature=feature)


def test_register_mixer_by_name_only_binds_a_declared_mixer_once():
    class Other(Mixer):
        pass

    with pytest.raises(TypeError, match="not declared"):
        register_mixer("no_such_mixer")(Other)
    with pytest.raises(ValueError, match="declared for module search_spaces.mixers.softmax"):
        register_mixer("softmax")(Other)
    with pytest.raises(TypeError, match="causal"):
        register_mixer("mine", params={})(Other)
