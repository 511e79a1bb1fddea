"""Named trial attributes, Optuna's retry bookkeeping read through Optuna, the private reach-ins kept in
one module, and one way to turn an exception into a one-line reason."""

import re
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from nas.store import optuna_access, trial_attrs
from search_spaces.failures import failure_reason, first_line

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("exc, reason, line", [
    (ValueError("bad width\nTraceback detail"), "ValueError: bad width", "bad width"),
    (RuntimeError("\n  CUDA error: out of memory  \nmore"), "RuntimeError: CUDA error: out of memory",
     "CUDA error: out of memory"),
    (KeyError(), "KeyError", "KeyError"),
    (OSError("   "), "OSError", "OSError"),
], ids=["two-lines", "leading-blank", "no-message", "blank-message"])
def test_failure_reason_is_one_line(exc, reason, line):
    assert failure_reason(exc) == reason
    assert first_line(exc) == line


def _failed_trial(study: optuna.Study, **user_attrs) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    for k, v in user_attrs.items():
        trial.set_user_attr(k, v)
    study.tell(trial, state=TrialState.FAIL)
    return study.trials[-1]


def test_retry_history_reads_what_optunas_retry_callback_writes():
    study = optuna.create_study()
    first = _failed_trial(study, **{trial_attrs.ERROR_KEY: "boom"})
    RetryHeartbeatStaleTrialCallback()(study, first)  # as Optuna does for a stale trial
    retry = study.trials[-1]
    assert trial_attrs.retry_history(retry) == [first.number]
    assert trial_attrs.retry_history(first) == []
    # the Ray searcher writes these two keys itself, as the callback does
    assert retry.system_attrs[trial_attrs.RETRY_HISTORY_KEY] == [first.number]
    assert retry.system_attrs[trial_attrs.FAILED_TRIAL_KEY] == first.number
    assert trial_attrs.error_of(first) == "boom"


def test_error_of_a_pruned_trial_is_its_pruned_reason():
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr(trial_attrs.PRUNED_REASON_KEY, "stopped at rung zero_cost")
    study.tell(trial, state=TrialState.PRUNED)
    assert trial_attrs.error_of(study.trials[-1]) == "stopped at rung zero_cost"
    assert trial_attrs.metrics_of(study.trials[-1]) == {}


def test_a_trials_attributes_are_written_in_one_commit_and_a_retry_clears_its_inherited_outcome(tmp_path):
    import math

    import sqlalchemy as sa

    storage = RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    commits = []
    sa.event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    metrics = {"accuracy": 0.5, "latency_ms": 1.25}
    attrs = {trial_attrs.METRICS_KEY: metrics, **{trial_attrs.metric_attr(k): v for k, v in metrics.items()}}
    optuna_access.set_user_attrs(trial, attrs)
    assert len(commits) == 1  # Optuna's set_user_attr commits once per key
    stored = storage.get_trial(optuna_access.trial_id_of(trial))
    assert stored.user_attrs == trial.user_attrs == attrs
    assert trial_attrs.metric_attrs(stored) == trial_attrs.metrics_of(stored) == metrics
    stale = trial_attrs.stale_outcome({**attrs, trial_attrs.ARCH_KEY: "{}"})
    assert stale[trial_attrs.METRICS_KEY] is None and trial_attrs.ARCH_KEY not in stale
    assert all(math.isnan(stale[trial_attrs.metric_attr(k)]) for k in metrics)  # numbers: the column stays sortable
    in_memory = optuna.create_study().ask()  # other storages: key by key
    optuna_access.set_user_attrs(in_memory, attrs)
    assert in_memory.user_attrs == attrs


def test_optuna_access_matches_optunas_objects(tmp_path):
    storage = RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    assert optuna_access.engine(study) is storage.engine
    assert optuna_access.study_id_of(study) == storage.get_study_id_from_name("s")
    assert storage.get_trial(optuna_access.trial_id_of(trial)).number == trial.number
    other = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db")  # another process's handle
    other.tell(trial.number, 1.0)
    assert optuna_access.fresh_trial(study, trial).state == TrialState.COMPLETE
    assert optuna_access.storage_of(study).get_trial(optuna_access.trial_id_of(trial)).value == 1.0


def test_set_heartbeat_sets_what_optunas_constructor_sets(tmp_path):
    url = f"sqlite:///{tmp_path}/h.db"
    callback = RetryHeartbeatStaleTrialCallback(max_retry=3)
    plain = vars(RDBStorage(url)).copy()
    built = vars(RDBStorage(url, heartbeat_interval=7, grace_period=28, heartbeat_stale_trial_callback=callback))
    changed = {k for k in built if k in plain and _differs(built[k], plain[k])}
    storage = RDBStorage(url)
    optuna_access.set_heartbeat(storage, 7, 28, callback)
    assert changed and {k: vars(storage)[k] for k in changed} == {k: built[k] for k in changed}
    assert storage.get_heartbeat_interval() == 7 and storage.get_heartbeat_stale_trial_callback() is callback


def _differs(a, b) -> bool:
    """Whether two storage settings differ (engines and sessions are per object: never compared)."""
    return type(a) is not type(b) or (isinstance(a, (int, float, str, type(None), RetryHeartbeatStaleTrialCallback))
                                      and a != b)


# a trial or study attribute written or read under a bare string key (use the nas.store.trial_attrs names)
_BARE_KEY = re.compile(r"""(set_user_attr|set_system_attr)\(\s*["']|(user_attrs|system_attrs)(\.get\(|\[)\s*["']"""
                       r"""|(user_attrs|system_attrs)=\{\s*["']""")
# Optuna's private attributes: only nas/store/optuna_access.py reaches them
_PRIVATE = re.compile(r"(?<!self)\._(storage|trial_id|study_id)\b")


@pytest.mark.parametrize("package", ["nas", "evaluators", "search_spaces", "benchmarks"])
def test_no_bare_attribute_keys_and_no_private_optuna_access(package):
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            private = _PRIVATE.search(line) and path.name != "optuna_access.py"
            if _BARE_KEY.search(line) or private:
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_retries_of_reads_each_trials_retry_bookkeeping_once():
    from nas.store.study import count_finished
    from tests.cli_helpers import retried_study

    trials = retried_study().get_trials()
    histories = {t.number: trial_attrs.retry_history(t) for t in trials}  # the per-trial reader
    assert histories == {0: [], 1: [0], 2: [0, 1], 3: [], 4: [], 5: [4], 6: []}
    retries = trial_attrs.retries_of(trials)
    # what the readers it replaces said: the numbers retried (the budget count) ...
    assert retries.retried == {n for h in histories.values() for n in h} == {0, 1, 4}
    # ... each stale trial's retry, the one right after it in its series (the dead-trial report) ...
    assert {n: retries.retried_as[n] for n in retries.retried} == {h[-1]: t for t, h in histories.items() if h}
    # ... and an interrupted trial's, the trial queued with its number, not #5 that inherits it
    assert retries.retried_as == {0: 1, 1: 2, 3: 4, 4: 5}
    assert count_finished(trials) == count_finished(trials, retries) == 3  # 2, 5 and 6


def test_retries_of_calls_the_per_trial_reader_once_per_trial(monkeypatch):
    from tests.cli_helpers import retried_study

    trials = retried_study().get_trials()
    calls = []
    reader = RetryHeartbeatStaleTrialCallback.retry_history
    monkeypatch.setattr(RetryHeartbeatStaleTrialCallback, "retry_history",
                        staticmethod(lambda t: calls.append(t.number) or reader(t)))
    trial_attrs.retries_of(trials)
    assert sorted(calls) == [t.number for t in trials]
