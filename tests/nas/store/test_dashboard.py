"""optuna-dashboard serves our studies as they are: start its WSGI app on a free loopback port
against a study written by `nas search`, and read the study and its trials from its JSON API."""

import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from typer.testing import CliRunner

from nas.cli import app

optuna_dashboard = pytest.importorskip("optuna_dashboard")

FAST_SPACE = """
name: fast
task:
  name: mqar
  params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 32}
objectives: {accuracy: maximize, latency_ms: minimize}
trials: 2
train: {steps: 3, batch_size: 16, lr: 0.01}
latency: {batch_size: 1, threads: 1, warmup: 1, repeats: 2, max_seconds: 0.2}
arch:
  stages:
    - depth: 1
      dim: 32
      mixer:
        choices:
          softmax: {heads: [1, 2]}
          hyena: {filter_dim: 8}
      ffn: {type: mlp, ratio: 2}
"""


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    d = tmp_path_factory.mktemp("dash")
    (d / "fast.yaml").write_text(FAST_SPACE)
    url = f"sqlite:///{d / 'dash.db'}"
    r = CliRunner().invoke(app, ["search", "--space", str(d / "fast.yaml"), "--study", "dash",
                                 "--storage", url, "--trials", "2", "--sampler", "random"])
    assert r.exit_code == 0, r.output
    return url


@pytest.fixture()
def server(searched):
    wsgi = optuna_dashboard.wsgi(searched)
    httpd = make_server("127.0.0.1", 0, wsgi, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def test_dashboard_serves_study_and_trials(server):
    studies = _get(f"{server}/api/studies")["study_summaries"]
    [study] = [s for s in studies if s["study_name"] == "dash"]
    assert [d.lower() for d in study["directions"]] == ["maximize", "minimize"]
    detail = _get(f"{server}/api/studies/{study['study_id']}")
    assert detail["name"] == "dash"
    assert detail["objective_names"] == ["accuracy", "latency_ms"]  # from study.set_metric_names
    trials = detail["trials"]
    assert len(trials) == 2 and all(t["state"] == "Complete" for t in trials)
    attrs = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
    assert "arch" in attrs and "summary" in attrs  # our user attrs show as they are
    assert len(detail["best_trials"]) >= 1


def test_dashboard_shows_and_sorts_each_metric(server, searched):
    """Every stored metric is also a user attribute of its own (``metric.<name>``), equal to the
    ``metrics`` dict; the dashboard lists each as a sortable column of the trial table."""
    import optuna

    from nas.store.trial_attrs import metric_attr, metric_attrs, metrics_of

    [study] = [s for s in _get(f"{server}/api/studies")["study_summaries"] if s["study_name"] == "dash"]
    detail = _get(f"{server}/api/studies/{study['study_id']}")
    sortable = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    served = {t["number"]: {a["key"]: a["value"] for a in t["user_attrs"]} for t in detail["trials"]}
    for t in optuna.load_study(study_name="dash", storage=searched).trials:
        metrics = metrics_of(t)
        assert metrics and metric_attrs(t) == metrics
        for name, value in metrics.items():
            assert served[t.number][metric_attr(name)] == str(value)
    for name in ("accuracy", "latency_ms", "latency_ci_low", "latency_ci_high", "params", "train_seconds"):
        assert sortable[metric_attr(name)], name
    assert not sortable["metrics"]  # the JSON dict: shown, not sortable
