"""Reading YAML and JSON that a user wrote: a key given twice in one mapping is an error.

``yaml.safe_load`` and ``json.loads`` keep the last of two equal keys without a word, so a space
file with two ``long:`` profiles under ``deploy:`` silently runs the second. Every space file,
deployment profile section and export metadata file is read here instead::

    load_yaml(text)   # yaml.safe_load, refusing duplicates: DuplicateKeyError (a yaml.YAMLError)
    load_json(text)   # json.loads, refusing duplicates: ValueError

A YAML refusal carries the line of the second key (``problem_mark``), so the usual YAML error
handling prints ``line 9, column 3: ... key 'long' appears twice in deploy (first on line 5)``.
Merge keys (``<<: *base``) may still be overridden, as YAML allows.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = ["DuplicateKeyError", "UniqueKeyLoader", "load_json", "load_yaml"]

MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A YAML mapping names a key twice; ``problem_mark`` is where the second one is."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding a key twice, naming the key, the path
    of the mapping (``deploy``, ``arch.stages[0].mixer.choices``) and both lines."""

    def construct_document(self, node):
        self._check_unique(node, "", set())
        return super().construct_document(node)

    def _check_unique(self, node, path: str, seen: set) -> None:
        if id(node) in seen:  # an alias: checked where its anchor is (and recursive data ends here)
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_unique(item, f"{path}[{i}]", seen)
        elif isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self._key(key_node)
                if key is not None and key in first:
                    raise DuplicateKeyError(None, None, f"key {key!r} appears twice {f'in {path}' if path else 'at the top level'} "
                                                        f"(first on line {first[key].start_mark.line + 1})",
                                            key_node.start_mark)
                if key is not None:
                    first[key] = key_node
                self._check_unique(value_node, f"{path}.{key}" if path else str(key), seen)

    def _key(self, key_node):
        """The value of a scalar key (``1`` and ``1.0`` are one key, as in the dict they build);
        None for other keys, which the constructor refuses itself when they cannot be keys."""
        if not isinstance(key_node, yaml.ScalarNode):
            return None
        key = self.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            return None
        return key


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``; :class:`DuplicateKeyError` when a mapping names a key twice."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _unique_pairs(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def load_json(text) -> Any:
    """``json.loads(text)``; ValueError when an object names a key twice."""
    return json.loads(text, object_pairs_hook=_unique_pairs)
