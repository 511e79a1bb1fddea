"""The mixer contract (search_spaces/contracts.py): plugin mixers that each break one rule are
refused with that rule named, every built-in mixer passes, and a space naming a broken mixer is
refused when it is bound to its task."""

import sys

import pytest
import torch

from evaluators import load_space
from search_spaces import SpaceError, get_mixer_info, list_mixers
from search_spaces.contracts import ContractError, check_mixer, mixer_origin
from search_spaces.mixer_registry import MIXERS
from search_spaces.plugins import load_plugins, resolve_plugins

# a correct causal mixer: the running mean of the tokens so far, then a linear layer; each case
# below changes one line of it and so breaks exactly one rule
GOOD = {
    "init": "pass",
    "forward": "y = self.proj(torch.cumsum(x, 1) / torch.arange(1, x.shape[1] + 1)[:, None])",
    "returns": "y",
}
BROKEN = {  # id: (the line changed, its new text, the rule the message names)
    "future": ("forward", "y = self.proj(torch.roll(x, -1, 1))",
               "declared causal, but output position 0 depends on input position 1"),
    "shape": ("returns", "y.mean(1, keepdim=True)", "output shape (2, 1, 16) is not the input's (2, 16, 16)"),
    "dtype": ("returns", "y.double()", "output dtype torch.float64 is not the input's torch.float32"),
    "no-grad": ("init", "self.unused = nn.Parameter(torch.zeros(dim))", "parameter 'unused' gets no gradient"),
    "nan": ("returns", "y * float('nan')", "output is not finite (NaN or inf) on a finite input"),
    "exit": ("forward", "sys.exit(3)", "forward raises SystemExit: 3"),
    "raises": ("forward", "raise RuntimeError('out of ideas')", "forward raises RuntimeError: out of ideas"),
    "build": ("init", "raise ValueError('cannot build')", "building it raises ValueError: cannot build"),
    "detached": ("returns", "y.detach()", "its output carries no gradient"),
    "tuple": ("returns", "(y, None)", "forward returns tuple, not a tensor"),
    "random": ("returns", "y + torch.randn_like(y)", "declared causal, but its causality cannot be probed: "
                                          "in eval mode it gives different outputs for the same input"),
}
PLUGIN = """
import sys

import torch
from torch import nn

from search_spaces import Mixer, Param, register_mixer


@register_mixer("{name}", params={{"k": Param(1, int, choices=(1, 2, 3))}}, causal=True, family="recurrent")
class Probe(Mixer):
    \"\"\"A test mixer.\"\"\"

    def __init__(self, dim, *, causal=False, k=1):
        super().__init__(dim, causal=causal)
        self.proj = nn.Linear(dim, dim)
        self.k = k
        {init}

    def forward(self, x, hw=None):
        {forward}
        if self.k == 3:
            {k3}
        return {returns}
"""


@pytest.fixture(autouse=True)
def no_plugin_mixers_left():
    """Each test's plugin mixers and modules are gone afterwards: other tests iterate the registry,
    and a plugin loaded again must register its mixer again."""
    before, modules = set(MIXERS), set(sys.modules)
    yield
    for name in set(MIXERS) - before:
        MIXERS.unregister(name)
    for module in set(sys.modules) - modules:
        if module.startswith(("mixer_nas_plugin_", "tcontract_")):
            del sys.modules[module]


def _plugin(tmp_path, name, k3="pass", **lines) -> str:
    """Write and load plugin ``<name>.py`` holding mixer ``name`` (GOOD with ``lines`` changed;
    with k=3 it also runs ``k3``)."""
    (tmp_path / f"{name}.py").write_text(PLUGIN.format(name=name, k3=k3, **{**GOOD, **lines}))
    load_plugins(resolve_plugins([f"{name}.py"], tmp_path), installed=False)
    return name


def test_the_correct_mixer_passes(tmp_path):
    name = _plugin(tmp_path, "fine")
    for dim, causal in ((16, True), (16, False), (24, True)):
        check_mixer(name, dim=dim, causal=causal)


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_mixer_breaking_one_rule_is_refused_naming_it(tmp_path, case):
    where, line, rule = BROKEN[case]
    name = _plugin(tmp_path, f"broken_{case.replace('-', '_')}", **{where: line})
    with pytest.raises(ContractError) as e:
        check_mixer(name, dim=16, causal=True)
    message = str(e.value)
    assert message.startswith(f"mixer {name!r} (plugin {name}.py) breaks its contract: {rule}"), message
    assert message.endswith("(built with dim=16, causal=True, k=1)") and "\n" not in message


def test_future_leak_matters_only_where_the_mixer_is_built_causal(tmp_path):
    name = _plugin(tmp_path, "peek", forward=BROKEN["future"][1])
    check_mixer(name, dim=16, causal=False)  # a non-causal task: every position may see every other
    with pytest.raises(ContractError, match="output position 0 depends on input position 1"):
        check_mixer(name, dim=16, causal=True)


def test_a_late_leak_is_found_at_its_positions(tmp_path):
    forward = "y = self.proj(torch.cat([x[:, :3], x[:, 4:5], x[:, 4:]], 1))  # position 3 reads 4"
    name = _plugin(tmp_path, "late", forward=forward)
    with pytest.raises(ContractError, match="output position 3 depends on input position 4 "):
        check_mixer(name, dim=16, causal=True)


def test_the_message_names_a_module_plugin_as_the_user_named_it(tmp_path, monkeypatch):
    """A module plugin's mixer, in a submodule the plugin imports, is named after the plugin; a
    mixer registered by a module that no plugin loaded is named after its module."""
    (tmp_path / "tcontract_lib").mkdir()
    (tmp_path / "tcontract_lib" / "__init__.py").write_text("from tcontract_lib import impl\n")
    (tmp_path / "tcontract_lib" / "impl.py").write_text(PLUGIN.format(name="libmix", k3="pass", **GOOD))
    (tmp_path / "tcontract_other.py").write_text(PLUGIN.format(name="othermix", k3="pass", **GOOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugins(resolve_plugins(["tcontract_lib"], tmp_path), installed=False)
    __import__("tcontract_other")
    assert mixer_origin("libmix") == "plugin tcontract_lib"
    assert mixer_origin("othermix") == "module tcontract_other"


def test_each_configuration_is_probed_once_and_leaves_the_rng_and_threads_alone(tmp_path):
    name = _plugin(tmp_path, "counted", init="type(self).built = getattr(type(self), 'built', 0) + 1")
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    for _ in range(3):
        check_mixer(name, dim=16, causal=True)
    check_mixer(name, {"k": 2}, dim=16, causal=True)
    assert get_mixer_info(name).cls.built == 2
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


def _one_at_a_time(info, dim):
    """The defaults, then each parameter's other values in turn (its choices; a number's lower
    bound; both booleans), where the mixer's rules allow them at width ``dim``."""
    yield {}
    for pname, p in info.params.items():
        values = (True, False) if p.kind is bool else p.choices or ((p.low,) if p.low is not None else ())
        for value in values:
            params = {**info.defaults(), pname: value}
            if value != p.default and all(rule(dim, params) is None for rule in info.rules):
                yield {pname: value}


@pytest.mark.parametrize("name,causal", [(n, c) for n in list_mixers() for c in (False, True)
                                         if not c or get_mixer_info(n).causal])
def test_every_built_in_mixer_keeps_its_contract_with_each_parameter_value(name, causal):
    """What a space's check takes on trust: it probes a built-in mixer with its first configuration."""
    info = get_mixer_info(name)
    assert mixer_origin(name) == "built-in"
    for grid in (True,) if info.needs_2d else (False, True) if not causal else (False,):
        for params in _one_at_a_time(info, 32):
            check_mixer(name, params, dim=32, causal=causal, grid=grid)


SPACE = """
plugins: [{plugin}]
task: {{name: mqar, params: {{vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 16}}}}
objectives: {{accuracy: maximize}}
arch:
  stages:
    - depth: 1
      dim: [16, 32]
      mixer: {{choices: {{softmax: {{heads: [1, 2]}}, {mixer}: {{k: {k}}}}}}}
"""


def _space(tmp_path, name, k="[1, 2, 3]"):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(plugin=f"{name}.py", mixer=name, k=k))
    return str(path)


def test_a_space_naming_a_broken_mixer_is_refused_when_bound_to_its_task(tmp_path):
    name = _plugin(tmp_path, "peek", forward=BROKEN["future"][1])
    with pytest.raises(SpaceError) as e:
        load_space(_space(tmp_path, name))
    assert str(e.value).startswith(f"{tmp_path / 'space.yaml'}: arch.stages[0].mixer.choices.peek: mixer 'peek' "
                                   "(plugin peek.py) breaks its contract: declared causal, but output position 0")


def test_every_value_a_space_allows_is_probed(tmp_path):
    """A mixer broken only with k=3 is refused where the space allows k=3, not where it does not."""
    name = _plugin(tmp_path, "odd", k3="return x[:, :1]")
    assert load_space(_space(tmp_path, name, k="[1, 2]")).io.causal
    with pytest.raises(SpaceError, match=r"output shape \(2, 1, 16\) .* \(built with dim=16, causal=True, k=3\)"):
        load_space(_space(tmp_path, name))
