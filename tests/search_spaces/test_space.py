
import re

import optuna
import pytest

import search_spaces
from evaluators import load_space
from search_spaces import SpaceError, sample
from tests.cli_helpers import load_space_text

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.mark.parametrize("name", search_spaces.list_spaces())
def test_builtin_space_samples_50_valid(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ids = set()
    for _ in range(50):
        t = study.ask()
        arch = sample(space, t)  # validated inside
        search_spaces.build_model(arch, space.io)
        ids.add(arch.arch_id)
        study.tell(t, 0.0)
    assert len(ids) > 1
    assert space.count()[0] >= len(ids)


def test_heads_filtered_by_width_with_conditional_names():
    space = load_space_text("""
        task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2}}
        arch:
          stages:
            - depth: 1
              dim: [24, 32]
              mixer: {choices: {softmax: {heads: [1, 3, 4]}}}
    """)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        t = study.ask()
        arch = sample(space, t)
        mixer = arch.stages[0].blocks[0].mixer
        heads = mixer.params.get("heads", 4)
        assert arch.stages[0].dim % heads == 0
        seen.update(k for k in t.params if "heads" in k)
        study.tell(t, 0.0)
    # at dim 24 all of 1, 3, 4 divide: the plain name; at 32 only 1, 4: a conditional name
    assert seen == {"s0.softmax.heads", "s0.softmax.heads|dim=32"}


def test_count_matches_enumeration():
    space = load_space_text("""
        task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2}}
        arch:
          stages:
            - depth: [1, 2]
              dim: 32
              mixer: {per_layer: true, choices: {softmax: {heads: [1, 2]}, hyena: {}}}
              ffn: {type: [mlp, glu]}
    """)
    # 3 mixer options per layer; depth 1: 3 * 2 ffn; depth 2: 9 * 2 ffn (ffn shared in a stage)
    assert space.count() == (3 * 2 + 9 * 2, True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ids = set()
    for _ in range(400):
        t = study.ask()
        ids.add(sample(space, t).arch_id)
        study.tell(t, 0.0)
    assert len(ids) == space.count()[0]


BASE = """
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2}}
arch:
  stages:
    - depth: [1, 2]
      dim: [32]
      mixer: {choices: {softmax: {heads: [1, 2]}}}
"""


@pytest.mark.parametrize("old,new,path,fragment", [
    ("depth: [1, 2]", "depth: [1, 2", "line", "invalid YAML"),
    ("      dim: [32]", "      dim: [32]\n      width: 3", "arch.stages[0].width", "unknown key"),
    ("softmax: {heads: [1, 2]}", "softmaxx: {}", "arch.stages[0].mixer.choices.softmaxx", "unknown mixer"),
    ("depth: [1, 2]", "depth: []", "arch.stages[0].depth", "empty choice list"),
    ("depth: [1, 2]", "depth: two", "arch.stages[0].depth", "'two' is not allowed (an int >= 1)"),
    ("heads: [1, 2]", "heads: []", "arch.stages[0].mixer.choices.softmax.heads", "empty choice list"),
    ("heads: [1, 2]", "heads: [1.5]", "arch.stages[0].mixer.choices.softmax.heads", "1.5 is not allowed (an int"),
    ("heads: [1, 2]", "kv: [1]", "arch.stages[0].mixer.choices.softmax.kv", "no such parameter"),
    ("softmax: {heads: [1, 2]}", "gfnet: {}", "arch.stages[0].mixer.choices.gfnet", "does not support causal"),
    ("heads: [1, 2]", "heads: [3]", "arch.stages[0].dim", "no mixer in arch.stages[0].mixer.choices is valid at dim 32"),
    ("name: mqar", "name: nope", "task", "unknown task"),
    ("num_kv_pairs: 2", "num_kv_pairs: 2, colour: 3", "task", "no parameter 'colour'"),
    ("      dim: [32]", "      dim: [32]\n      dim: [64]", "line 7, column 7",
     "invalid YAML: key 'dim' appears twice in arch.stages[0] (first on line 6)"),
    ("softmax: {heads: [1, 2]}", "softmax: {heads: [1]}, softmax: {heads: [2]}", "line 7",
     "key 'softmax' appears twice in arch.stages[0].mixer.choices"),
    ("arch:", "deploy:\n  long: {seq_len: 64}\n  long: {seq_len: 128}\narch:", "line 5, column 3",
     "key 'long' appears twice in deploy (first on line 4)"),
    ("task:", "trials: 3\ntrials: 4\ntask:", "line 3", "key 'trials' appears twice at the top level"),
])
def test_bad_space_files(tmp_path, old, new, path, fragment):
    text = BASE.replace(old, new)
    assert text != BASE
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SpaceError) as e:
        load_space(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}: {path}"), msg
    assert fragment in msg, msg
    assert "\n" not in msg


def test_unknown_space_name():
    with pytest.raises(SpaceError, match="unknown space; built-in spaces"):
        load_space("no-such-space")


def test_a_space_is_immutable_and_binding_makes_a_bound_copy():
    """One read of a space is shared by every caller of a search, so none of them can change it."""
    import dataclasses

    from evaluators.spaces import read_space, task_io

    unbound = search_spaces.load_space("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        unbound.trials = 3
    bound = unbound.bind(task_io(unbound))
    assert unbound.io is None and bound.io == task_io(unbound) and bound.text == unbound.text
    assert search_spaces.load_space("tiny", io=task_io).io == bound.io  # the I/O handed down as a function
    checked = read_space("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.settings = None
    assert checked.space.io == bound.io and checked.settings_for(7).seed == 7 and checked.settings.seed == 0


def test_floors_are_parsed_as_numbers_or_chance():
    """A space's floors: {metric: a number, or chance}; the metric and the task's chance level are
    the evaluators' to check (tests/evaluators/test_tasks.py), so this layer keeps 'chance' as written."""
    from search_spaces.space import CHANCE, parse_space_text

    text = search_spaces.space.resolve_space("tiny").read_text()
    assert parse_space_text(text).floors == {}
    space = parse_space_text(text + "floors: {accuracy: chance, latency_ms: '2e1'}\n")
    assert space.floors == {"accuracy": CHANCE, "latency_ms": 20.0}
    with pytest.raises(SpaceError, match=re.escape("floors.accuracy: True is not allowed (a number, or 'chance'")):
        parse_space_text(text + "floors: {accuracy: true}\n")
