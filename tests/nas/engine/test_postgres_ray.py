"""Several drivers share one study in PostgreSQL while their trials run on a 2-node Ray cluster.

A throwaway PostgreSQL cluster (initdb / pg_ctl, run as the ``postgres`` user when we are root)
listens on a free loopback port, reached through the URL spelling the README shows
(``postgresql://``, psycopg 3); ``ray.cluster_utils.Cluster`` starts two Ray nodes on this machine.
One driver runs in this process, a second one is ``nas resume`` in a subprocess, at the same time.
"""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("psycopg")  # the postgres extra: psycopg 3, what postgresql:// URLs use

from optuna.trial import TrialState  # noqa: E402

from nas.engine.backends import ray as ray_backend  # noqa: E402
from nas.store.study import budget_count, create_or_load_study, load_study  # noqa: E402
from tests.cli_helpers import NAS, ray_search_config, worker_killed_once  # noqa: E402

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    if not all((PG_BIN / b).exists() for b in ("initdb", "pg_ctl", "createdb")):
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (set PG_BIN)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start postgres as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o700)
    port = _free_port()
    run = lambda cmd: subprocess.run(_as_postgres(cmd), check=True, capture_output=True, text=True)  # noqa: E731
    run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"])
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"])
    try:
        run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas"])
        yield f"postgresql://postgres@127.0.0.1:{port}/nas"  # the README's spelling
    finally:
        run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def two_node_cluster():
    from ray.cluster_utils import Cluster

    mb = 1024 * 1024
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * mb,
                                                          "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=80 * mb)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_two_drivers_share_a_postgres_study_on_a_two_node_cluster(postgres_url, two_node_cluster, tmp_path):
    # workers=2 over two 1-CPU nodes: this driver's first two trials run one on each node
    config = ray_search_config(tmp_path, "shared", trials=4, workers=2, storage=postgres_url, asha=False,
                               ray_address=two_node_cluster.address)
    study, config, created = create_or_load_study(config)
    assert created
    # a second driver ("another machine"): `nas resume` reads backend, space and cluster from the study
    other = subprocess.Popen([*NAS, "resume", "--study", "shared", "--storage", postgres_url],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ray_backend.run(study, config, log=lambda m: None)
        out, _ = other.communicate(timeout=240)
    finally:
        other.kill()
    assert other.returncode == 0, out

    study, _ = load_study(postgres_url, "shared")
    trials = study.get_trials()
    assert budget_count(study) >= 4
    assert len(trials) <= 4 + 2  # each driver stops asking at the budget; trials in flight may overshoot
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.user_attrs.get("error")) for t in trials]
    drivers = {t.user_attrs["driver"]["pid"] for t in trials}
    nodes = {t.user_attrs["worker"]["ray_node"] for t in trials}
    assert os.getpid() in drivers  # (whether the second driver got a trial depends on timing)
    assert len(nodes) == 2, "trials should have run on both Ray nodes"
    print(f"drivers {drivers}, nodes {len(nodes)}; {len(trials)} trials; second driver said:\n{out[-500:]}")


def test_a_worker_killed_mid_run_on_the_cluster_loses_nothing(postgres_url, two_node_cluster, tmp_path):
    """The issue's check: a parallel search on PostgreSQL and the 2-node cluster with a worker killed
    mid-trial; the study is then inspected for lost, duplicated or stuck trials."""
    marker = tmp_path / "killed"
    with worker_killed_once(tmp_path, marker) as space:  # the first trial at step 2 kills its worker
        config = ray_search_config(tmp_path, "faulty", trials=4, workers=2, storage=postgres_url, asha=False,
                                   ray_address=two_node_cluster.address, space=space)
        study, config, _ = create_or_load_study(config)
        ray_backend.run(study, config, log=lambda m: None)
    assert marker.exists(), "no worker was killed"

    study, _ = load_study(postgres_url, "faulty")
    trials = study.get_trials()
    stuck = [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not stuck, f"trials left {stuck} RUNNING or WAITING"
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "worker process died at step" in failed[0].user_attrs["error"], \
        [(t.number, t.state, t.user_attrs.get("error")) for t in trials]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == failed[0].params
    assert budget_count(study) == 4  # nothing lost: the budget is reached, the retry counting for the killed one
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    trained = [t.user_attrs["arch_id"] for t in done if t.user_attrs.get("reused_from") is None]
    assert len(trained) == len(set(trained)), "an architecture was trained twice"
    assert {t.user_attrs["worker"]["ray_node"] for t in done if "worker" in t.user_attrs}, "no worker record"
