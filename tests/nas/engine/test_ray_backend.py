"""The Ray backend against one Optuna study: parallel trials, ASHA pruning, killed workers, the lock.

One local Ray instance (2 CPUs) serves the whole module; the backend reuses an initialized Ray.
"""

import threading

import pytest

ray = pytest.importorskip("ray")

import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

import nas  # noqa: E402
from nas.engine.backends import ray as ray_backend  # noqa: E402
from nas.engine.device_lock import DeviceLock  # noqa: E402
from nas.store.study import budget_count, create_or_load_study  # noqa: E402
from tests.cli_helpers import RAY_SPACE, ray_search_config, worker_killed_once  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _search(tmp_path, name, *, trials, workers=2, backend="ray", **options):
    """nas.search of RAY_SPACE (random sampler, seed 1, heartbeat 1 s) into tmp_path/<name>.db."""
    path = tmp_path / "space.yaml"
    path.write_text(RAY_SPACE)
    url = f"sqlite:///{tmp_path}/{name}.db"
    df = nas.search(str(path), study=name, storage=url, trials=trials, backend=backend, workers=workers,
                    sampler="random", seed=1, heartbeat=1, options=options)
    return df, optuna.load_study(study_name=name, storage=url)


def test_ray_search_fills_study_like_local(ray_local, tmp_path):
    df, study = _search(tmp_path, "par", trials=4, asha=False)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert df.attrs["finished"] == 4
    workers = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(workers) == 2, "two workers should have run trials in parallel"

    _, local = _search(tmp_path, "loc", trials=1, backend="local")
    expected = set(local.trials[0].user_attrs)
    for t in trials:
        assert expected <= set(t.user_attrs), f"missing {expected - set(t.user_attrs)}"
        assert set(t.user_attrs["metrics"]) == set(local.trials[0].user_attrs["metrics"])
        assert t.user_attrs["metrics"]["latency_spread"] >= 0
    # the rows are the results API's, unchanged
    pd.testing.assert_frame_equal(df, nas.load_trials(df.attrs["storage"], "par"))
    assert len(df) == 4 and df["accuracy"].notna().all() and df["arch_id"].notna().all()
    assert df.attrs["config"]["backend"] == "ray"  # and `nas resume` finds the stored config


def test_asha_prunes_weak_candidates(ray_local, tmp_path):
    # one worker: trials reach the rungs in order, so the run is deterministic
    df, study = _search(tmp_path, "asha", trials=6, workers=1, asha=True, report_every=2, asha_grace_steps=4,
                        asha_reduction=2)
    assert df.attrs["finished"] == 6
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, "ASHA should stop at least one of 6 random candidates"
    for t in pruned:
        step = t.user_attrs["pruned_at_step"]
        assert 4 <= step < 20 and step % 2 == 0
        assert t.user_attrs["arch"] and "metrics" not in t.user_attrs
    assert study.get_trials(states=(TrialState.COMPLETE,)), "the best ones finish"


def test_killed_worker_and_dead_driver_trials_are_failed_and_retried_once(ray_local, tmp_path):
    marker = tmp_path / "killed"
    with worker_killed_once(tmp_path, marker) as space:  # the first trial kills its worker at step 2
        config = ray_search_config(tmp_path, "kill", trials=3, asha=False, space=space)
        # the orphan's retry runs first and may be the trial whose worker is killed: allow that lineage
        # a second retry, so each fault below gets its one retry
        config.max_retry = 2
        study, config, _ = create_or_load_study(config)
        # a driver that died earlier left a trial RUNNING; its heartbeat stops now
        orphan = study.ask()
        study._storage.record_heartbeat(orphan._trial_id)
        ray_backend.run(study, config, log=lambda m: None)
        assert marker.exists()
        trials = study.get_trials()
        assert trials[orphan.number].state == TrialState.FAIL  # reaped as stale ...
        assert any(orphan.number in t.system_attrs.get("retry_history", []) for t in trials)  # ... and re-run
        failed = [t for t in trials if t.state == TrialState.FAIL and t.number != orphan.number]
        assert len(failed) == 1
        assert "worker process died at step" in failed[0].user_attrs["error"]
        retries = [t for t in trials if t.user_attrs.get("retry_of") == failed[0].number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert retries[0].params == failed[0].params
        assert budget_count(study) == 3  # the killed and orphaned trials' retries count instead of them
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_a_twin_of_a_trial_in_flight_waits_and_reuses_its_result(ray_local, tmp_path):
    import optuna

    import search_spaces

    config = ray_search_config(tmp_path, "twins", trials=3, asha=False)
    study, config, _ = create_or_load_study(config)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask()
    arch = search_spaces.sample(config.load_space(), draw)
    for _ in range(2):  # the two workers ask for both at once
        study.enqueue_trial({}, user_attrs={"fixed_arch": arch.to_json()})
    ray_backend.run(study, config, log=lambda m: None)
    first, second, *_ = study.get_trials()
    assert first.state == second.state == TrialState.COMPLETE
    assert "worker" in first.user_attrs  # trained ...
    assert "worker" not in second.user_attrs and second.user_attrs["reused_from"] == first.number  # ... once
    assert second.values == first.values
    assert budget_count(study) == 3 and len(study.get_trials()) == 3


def test_device_lock_pauses_trainers_during_a_measurement(tmp_path):
    trainer, other = DeviceLock("cpu", lock_dir=tmp_path), DeviceLock("cpu", lock_dir=tmp_path)
    timer = DeviceLock("cpu", lock_dir=tmp_path)
    trainer.hold_shared()
    measuring, measured, other_in = threading.Event(), threading.Event(), threading.Event()

    def measure():
        with timer.exclusive():
            measuring.set()
            assert not other_in.is_set(), "a trainer started during the measurement"
        measured.set()

    def other_trainer():
        measuring.wait()
        other.hold_shared()
        other_in.set()

    threads = [threading.Thread(target=measure), threading.Thread(target=other_trainer)]
    for t in threads:
        t.start()
    assert not measuring.wait(0.2), "the measurement must wait for the running training step"
    trainer.yield_shared()  # end of a training step: the measurement goes first
    for t in threads:
        t.join(10)
    assert measured.is_set() and other_in.is_set()
    assert timer.waited_s >= 0.15  # blocked behind the training step, and it says so
    for lock in (trainer, other, timer):
        lock.close()


def test_a_dead_worker_is_not_an_architectures_outcome():
    """A trial failed because its worker died is not reused for a later twin; a real failure is."""
    from nas.engine.objective import Objective

    study = optuna.create_study()
    for attrs in ({"arch_id": "a", "error": "worker process died at step 3: killed", "worker_died": True},
                  {"arch_id": "b", "error": "training loss became nan at step 2"}):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs))
    assert Objective.twin(study, "a", 99) is None
    assert Objective.twin(study, "b", 99).user_attrs["arch_id"] == "b"


def test_a_stop_signal_while_a_trial_is_being_prepared_leaves_it_owed(tmp_path):
    """SIGTERM lands between starting a trial and handing it to Tune (sampling, recording its
    architecture): it is raised once the trial is in flight, so abandoning the live trials records it
    FAIL and queues it again instead of leaving it RUNNING."""
    import signal

    from nas.engine import interrupts
    from nas.engine.backends.ray_searcher import StudySearcher

    config = ray_search_config(tmp_path, "stop", trials=3, asha=False)
    study, config, _ = create_or_load_study(config)
    searcher = StudySearcher(study, config, {}, log=lambda m: None)
    prepare = searcher.objective.prepare

    def prepare_then_signal(trial):
        # to the main thread itself (the searcher's heartbeat thread could take a process-directed one),
        # so the handler runs at once, inside the preparation
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        return prepare(trial)

    searcher.objective.prepare = prepare_then_signal
    try:
        with interrupts.handling(), pytest.raises(interrupts.Interrupted) as stop:
            searcher.suggest("ray-trial-0")
        assert searcher.abandon_live(stop.value) == [0]
    finally:
        searcher.close()
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["error"] == "interrupted by SIGTERM; queued again for the next run"
    assert trials[1].user_attrs["retry_of"] == 0
