"""The one registration mechanism: every registry answers an unknown name with the same message."""

import sys

import pytest

from evaluators.metrics import METRIC_REGISTRY, register_metric
from evaluators.tasks import TASKS, get_task
from evaluators.zero_cost import ZERO_COST, compute_zero_cost
from kernels.dispatch import OPS
from kernels.registry import Registry, UnknownName, snapshot
from nas.engine.backends import BACKENDS, get_backend
from search_spaces.ffn import FFNS, build_ffn
from search_spaces.mixer_registry import MIXERS, get_mixer

REGISTRIES = {"mixer": MIXERS, "FFN": FFNS, "task": TASKS, "metric": METRIC_REGISTRY,
              "zero-cost proxy": ZERO_COST, "backend": BACKENDS, "kernel op": OPS}
# each registry's public lookup, as callers use it
LOOKUPS = {
    "mixer": get_mixer,
    "FFN": lambda name: build_ffn(name, 8, 2.0),
    "task": get_task,
    "metric": METRIC_REGISTRY.get,
    "zero-cost proxy": lambda name: compute_zero_cost(None, None, None, None, (name,)),
    "backend": get_backend,
    "kernel op": OPS.get,
}


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_unknown_name_is_the_same_message_everywhere(kind):
    registry = REGISTRIES[kind]
    assert registry.kind == kind
    with pytest.raises(UnknownName) as e:
        LOOKUPS[kind]("nope")
    known = registry.names()
    assert known and known == sorted(known)
    assert str(e.value) == f"unknown {kind} 'nope'; known: {', '.join(known)}"
    assert isinstance(e.value, KeyError)  # callers that catch KeyError keep working
    assert (e.value.kind, e.value.name, e.value.known) == (kind, "nope", known)


def test_builtins_are_registered_by_their_modules():
    assert {"softmax", "hyena"} <= set(MIXERS) and {"mlp", "glu", "none"} <= set(FFNS)
    assert {"mqar", "cifar10"} <= set(TASKS) and set(BACKENDS) == {"local", "ray"}
    assert set(ZERO_COST) == {"synflow", "naswot", "jacob_cov", "snip", "grad_norm"}
    for name in ZERO_COST:  # every proxy is a metric too
        assert METRIC_REGISTRY[name].zero_cost and METRIC_REGISTRY[name].direction == "maximize"


def test_registry_register_get_twice_unregister():
    reg = Registry("widget", entry=lambda name, obj, *, size: (obj, size))

    @reg.register("a", size=3)
    def a():
        pass

    assert reg.get("a") == (a, 3) and reg.names() == ["a"] and "a" in reg and "b" not in reg
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a", size=1)(a)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.add("", 1)
    assert reg.unregister("a") == (a, 3)
    assert list(reg) == []
    with pytest.raises(TypeError, match="takes no metadata"):
        Registry("plain").register("x", size=1)


def test_builtins_load_on_first_use_before_a_plugin_can_take_their_name():
    reg = Registry("mixer", builtins=("search_spaces.mixers",), entry=lambda name, obj, **kw: obj)
    reg.add("mine", object())  # loads the built-in modules first (they register into MIXERS, not reg)
    assert reg.names() == ["mine"]
    with pytest.raises(ValueError, match="mixer 'softmax' is registered twice"):
        MIXERS.register("softmax", causal=True)(type("Fake", (), {}))


def test_register_metric_checks_its_arguments():
    with pytest.raises(ValueError, match="direction 'up' is not one of"):
        register_metric("m1", "up", lambda *a: 0.0)
    with pytest.raises(ValueError, match="at='later' is not one of"):
        register_metric("m1", "minimize", lambda *a: 0.0, at="later")
    with pytest.raises(TypeError, match="must be callable"):
        register_metric("m1", "minimize", 3)
    with pytest.raises(ValueError, match="metric 'accuracy' is registered twice"):
        register_metric("accuracy", "maximize", lambda *a: 0.0)
    assert "m1" not in METRIC_REGISTRY


WIDGETS = Registry("widget")  # filled by the module test_snapshot_restore_... writes


def test_snapshot_restore_undoes_registrations_but_keeps_those_of_modules_imported_since(tmp_path, monkeypatch):
    """What a failed plugin import relies on (search_spaces.plugins): ``restore`` puts back what was
    there and removes what was added since, except what a module imported since (and still
    imported) registered as it was imported, for that module will not be imported again."""
    WIDGETS.add("kept", 1)
    before = snapshot()
    WIDGETS.add("added", 2)
    WIDGETS.unregister("kept")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tplug_widgets.py").write_text(
        f"import sys\n\nsys.modules[{__name__!r}].WIDGETS.add('from_module', 3)\n")
    try:
        import tplug_widgets  # noqa: F401

        assert WIDGETS.names() == ["added", "from_module"] and snapshot() != before
        before.restore()
        assert WIDGETS.names() == ["from_module", "kept"]  # the module stays imported: its entry stays
        del sys.modules["tplug_widgets"]
        before.restore()
        assert WIDGETS.names() == ["kept"] and snapshot() == before
    finally:
        sys.modules.pop("tplug_widgets", None)
        for name in WIDGETS.names():
            WIDGETS.unregister(name)
