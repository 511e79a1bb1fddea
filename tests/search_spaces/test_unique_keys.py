"""The YAML and JSON readers of user files refuse a key given twice (yaml.safe_load and json.loads
keep the last one without a word), and read everything else as the plain readers do."""

import pytest
import yaml

from search_spaces.unique_keys import DuplicateKeyError, load_json, load_yaml

SAME = [
    "a: 1\nb: [1, 2, {c: 3}]\n",
    "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n",  # a merge key may be overridden, as YAML allows
    "- {a: 1}\n- {a: 2}\n",  # the same key in two mappings
    "a: &r [1]\nb: *r\nc: *r\n",
    "",
]


@pytest.mark.parametrize("text", SAME)
def test_reads_what_safe_load_reads(text):
    assert load_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text,message,line", [
    ("a: 1\na: 2\n", "key 'a' appears twice at the top level (first on line 1)", 2),
    ("x:\n  y: {p: 1, p: 2}\n", "key 'p' appears twice in x.y (first on line 2)", 2),
    ("l:\n  - {k: 1}\n  - {k: 1,\n     k: 2}\n", "key 'k' appears twice in l[1] (first on line 3)", 4),
    ("1: a\n1.0: b\n", "appears twice at the top level", 2),  # one key of the dict they build
])
def test_a_key_given_twice_is_refused_with_its_line(text, message, line):
    with pytest.raises(DuplicateKeyError) as e:
        load_yaml(text)
    assert message in e.value.problem and e.value.problem_mark.line + 1 == line
    assert isinstance(e.value, yaml.YAMLError)  # what every reader of a space file already handles


def test_recursive_aliases_end():
    data = load_yaml("a: &r [*r]\n")
    assert data["a"][0] is data["a"]


def test_json_refuses_a_key_given_twice():
    assert load_json('{"a": {"b": 1}, "c": [{"b": 2}]}') == {"a": {"b": 1}, "c": [{"b": 2}]}
    with pytest.raises(ValueError, match="key 'b' appears twice"):
        load_json('{"a": {"b": 1, "b": 2}}')
