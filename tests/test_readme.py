"""The README's examples stay true: its space-file snippets load, its two commands exist."""

import re
from pathlib import Path

import yaml

from nas.engine.config import load_space_checked

README = Path(__file__).resolve().parents[1] / "README.md"


def test_space_example_in_readme_loads(tmp_path):
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    full = [b for b in blocks if "arch:" in b]
    assert full, "the README shows a full space file"
    for i, text in enumerate(full):
        p = tmp_path / f"readme{i}.yaml"
        p.write_text(text)
        space = load_space_checked(str(p))
        assert space.stages and space.objectives
    ladders = [b for b in blocks if b.lstrip().startswith("ladder:")]
    assert ladders
    from evaluators.evaluation import ZERO_COST_METRICS
    from evaluators.ladder import parse_ladder

    for text in ladders:
        assert parse_ladder(yaml.safe_load(text)["ladder"], train_steps=200, zero_cost_names=ZERO_COST_METRICS,
                            filter_metrics=("params", "flops"))


def test_quick_start_commands_match_makefile_and_ci():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    cmds = re.findall(r"^(make \w+)", quick, flags=re.M)
    assert cmds == ["make search", "make test"]
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(r"^search:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (README.parent / ".ci" / "run").read_text()
