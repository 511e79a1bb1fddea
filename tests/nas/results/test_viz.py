"""nas plot / report / compare on studies built with optuna.create_trial (no training): real
ArchSpecs of the tiny space, the user attrs the objective writes, a baseline, a failure, a pruned trial."""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

import evaluators
import nas
import search_spaces
from nas.cli import app
from nas.engine.baselines import baseline_archs
from nas.engine.config import SearchConfig
from nas.results.plots import axes_pairs, staircase
from nas.results.report import arch_svg
from nas.store.study import CONFIG_ATTR, ENV_ATTR

runner = CliRunner()
ENV = {"device": "cpu", "cpu": "x86_64", "cpu_count": 2, "python": "3.11", "torch": "2.x"}


def _archs():
    space = evaluators.load_space("tiny")
    archs, _ = baseline_archs(space)
    sampler = optuna.samplers.RandomSampler(seed=0)
    st = optuna.create_study(sampler=sampler)
    for _ in range(12):
        archs[f"sampled{len(archs)}"] = search_spaces.sample(space, st.ask())
    return space, archs


def make_study(path: Path, name: str, objectives=None, seed=0) -> str:
    """A study as `nas search` leaves it: config and environment in the study, one trial per arch
    with arch/summary/metrics attrs; trial 0 is the 'transformer' baseline; one FAIL, one PRUNED."""
    objectives = objectives or {"accuracy": "maximize", "latency_ms": "minimize"}
    url = f"sqlite:///{path}"
    space, archs = _archs()
    text = search_spaces.space.resolve_space("tiny").read_text()
    cfg = SearchConfig(space="tiny", space_yaml=text, study=name, storage=url, trials=len(archs))
    study = optuna.create_study(study_name=name, storage=url, directions=list(objectives.values()))
    study.set_metric_names(list(objectives))
    study.set_user_attr(CONFIG_ATTR, cfg.to_json())
    study.set_user_attr(ENV_ATTR, ENV)
    rng = np.random.default_rng(seed)
    dist = {"x": CategoricalDistribution([0, 1])}
    for i, (label, arch) in enumerate(archs.items()):
        metrics = {"accuracy": float(rng.uniform(0.2, 0.95)), "latency_ms": float(rng.uniform(0.3, 5.0)),
                   "params": float(arch.depth * arch.stages[0].dim ** 2 * 12 + rng.integers(0, 500)),
                   "flops": 1e5 * (i + 1), "latency_spread": 0.05}
        attrs = {"arch_id": arch.arch_id, "arch": arch.to_json(), "summary": arch.summary(), "metrics": metrics}
        if label == "transformer":
            attrs["baseline"] = "transformer"
        state, values = TrialState.COMPLETE, [metrics[o] for o in objectives]
        if i == 3:
            state, values = TrialState.FAIL, None
            attrs = {**attrs, "error": "OutOfMemoryError: CUDA out of memory"}
            del attrs["metrics"]
        if i == 4:
            state, values = TrialState.PRUNED, None
            del attrs["metrics"]
        study.add_trial(optuna.trial.create_trial(state=state, values=values, params={"x": i % 2},
                                                  distributions=dist, user_attrs=attrs))
    return url


@pytest.fixture(scope="module")
def two_obj(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("viz") / "a.db", "a")


@pytest.fixture(scope="module")
def three_obj(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("viz") / "c.db", "c",
                      {"accuracy": "maximize", "latency_ms": "minimize", "params": "minimize"}, seed=1)


def test_load_trials_marks_baselines(two_obj):
    df = nas.load_trials(two_obj, "a")
    assert df.loc[df["number"] == 0, "baseline"].item() == "transformer"
    assert df["baseline"].notna().sum() == 1


def test_plot_png_and_custom_axes(two_obj, tmp_path):
    r = runner.invoke(app, ["plot", "--study", "a", "--storage", two_obj, "--out", str(tmp_path / "f.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["plot", "--study", "a", "--storage", two_obj, "--out", str(tmp_path / "g.png"),
                            "--x", "params", "--y", "accuracy", "--color", "arch.depth"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").stat().st_size > 10_000


def test_plot_html_is_offline_and_hovers_the_arch(two_obj, tmp_path):
    out = tmp_path / "f.html"
    r = runner.invoke(app, ["plot", "--study", "a", "--storage", two_obj, "--out", str(out)])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert "<script src=" not in html and 'src="http' not in html  # plotly.js inline
    assert len(html) > 1_000_000
    df = nas.load_trials(two_obj, "a")
    front = nas.pareto_front(df)
    assert "Pareto front" in html and "transformer" in html
    first = front.iloc[0]["summary"].split(" | ")[1]  # hover text holds the arch summary, per stage
    assert first.replace("(", "").split(":")[0] in html
    assert "not plotted (2 without metrics)" in html and "OutOfMemoryError" in html


def test_three_objectives_make_a_pairwise_grid(three_obj, tmp_path):
    df = nas.load_trials(three_obj, "c")
    assert axes_pairs(df) == [("accuracy", "latency_ms"), ("accuracy", "params"), ("latency_ms", "params")]
    for suffix in ("png", "html"):
        r = runner.invoke(app, ["plot", "--study", "c", "--storage", three_obj, "--out", str(tmp_path / f"g.{suffix}")])
        assert r.exit_code == 0, r.output
    assert '"xaxis3"' in (tmp_path / "g.html").read_text()


def test_plot_errors_are_one_line(two_obj, tmp_path):
    r = runner.invoke(app, ["plot", "--study", "a", "--storage", two_obj, "--out", str(tmp_path / "f.jpg")])
    assert r.exit_code == 2 and "--out" in r.output
    r = runner.invoke(app, ["plot", "--study", "a", "--storage", two_obj, "--out", str(tmp_path / "f.png"), "--color", "nope"])
    assert r.exit_code == 2 and "no column 'nope'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("dx,dy", [("maximize", "minimize"), ("minimize", "minimize"), ("maximize", "maximize")])
def test_staircase_corners_are_dominated_by_both_neighbours(dx, dy):
    import pandas as pd

    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    if (dx == "maximize") != (dy == "maximize"):
        pass  # increasing in both is a front when one objective is maximized
    else:
        df["b"] = [3.0, 2.0, 1.0]
    df.attrs["objectives"] = {"a": dx, "b": dy}
    xs, ys = staircase(df, "a", "b", df)
    assert len(xs) == 5  # 3 points + 2 corners
    sx, sy = (-1 if dx == "maximize" else 1), (-1 if dy == "maximize" else 1)
    for k in (1, 3):  # corners: no better than the points before and after, in both objectives
        for j in (k - 1, k + 1):
            assert sx * xs[k] >= sx * xs[j] and sy * ys[k] >= sy * ys[j]


def test_report_is_self_contained_with_a_diagram_per_front_arch(two_obj, tmp_path):
    r = runner.invoke(app, ["report", "--study", "a", "--storage", two_obj, "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "rep" / "report.html").read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    for forbidden in ("<script", "<link", "src=\"http", "<img"):
        assert forbidden not in html
    df = nas.load_trials(two_obj, "a")
    front = nas.pareto_front(df)
    assert html.count("<div class='arch'><svg") == len(front)
    assert f"Final: {nas.hypervolume(df):.4g}" in html
    for key in ENV:
        assert f"<td>{key}</td>" in html
    assert "OutOfMemoryError" in html and "## Front architectures" in md
    for link in ["front.png", "hypervolume.png"] + [f"arch_{int(n)}.svg" for n in front["number"]]:
        assert f"({link})" in md and (tmp_path / "rep" / link).exists()
    # each front row appears in the markdown table
    assert sum(1 for line in md.splitlines() if line.startswith("| ") and "embed[causal]" in line) >= len(front)


def test_arch_svg_draws_every_layer():
    space, archs = _archs()
    arch = archs["striped_hyena"]
    svg = arch_svg(arch, "title")
    root = ET.fromstring(svg)  # well-formed XML
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts.count("hyena") == 1 and texts.count("softmax") == 1
    assert any(t.startswith("stage 0 · width 64") for t in texts)
    assert "h=2" in texts and "mlp ×2" in texts


def test_compare_two_studies_in_their_own_files(two_obj, tmp_path):
    other = make_study(tmp_path / "b.db", "b", seed=5)
    out = tmp_path / "cmp.png"
    r = runner.invoke(app, ["compare", "--study", "a", "--study", "b", "--storage", two_obj, "--storage", other,
                            "--out", str(out)], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert out.exists()
    import pandas as pd

    from nas.results.volume import reference_point

    a, b = nas.load_trials(two_obj, "a"), nas.load_trials(other, "b")
    both = pd.concat([a[a.state == "COMPLETE"], b[b.state == "COMPLETE"]])
    both.attrs = a.attrs
    ref = reference_point(both)
    for df in (a, b):
        assert f"hypervolume {nas.hypervolume(df, reference=ref):.4g}" in r.output
    r = runner.invoke(app, ["compare", "--study", "a", "--study", "b", "--storage", two_obj, "--storage", other,
                            "--out", str(tmp_path / "cmp.html")])
    assert r.exit_code == 0 and (tmp_path / "cmp.html").stat().st_size > 1_000_000


def test_compare_errors(two_obj, three_obj, tmp_path):
    r = runner.invoke(app, ["compare", "--study", "a", "--study", "c", "--storage", two_obj, "--storage", three_obj])
    assert r.exit_code == 2 and "different objectives" in r.output
    r = runner.invoke(app, ["compare", "--study", "a", "--study", "c", "--study", "x",
                            "--storage", two_obj, "--storage", three_obj])
    assert r.exit_code == 2 and "one per --study" in r.output
