"""One door to storage (nas/store/storage.py): a search opens its storage once, a study's own
heartbeat settings are set on the storage its config was read from, and one message says a study
is missing, whichever command asked."""

from __future__ import annotations

import optuna
import pytest
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

import nas
from nas.store.optuna_access import storage_of
from nas.store.storage import open_storage, require_study
from nas.store.study import delete_study, load_study, study_summary
from tests.cli_helpers import write_space


@pytest.fixture
def opened(monkeypatch):
    """The storages made from now on, counted where every one is made: ``RDBStorage.__init__``
    (an Optuna call given a URL makes one too)."""
    made = []
    init = RDBStorage.__init__

    def counting(self, url, *args, **kwargs):
        made.append(url)
        init(self, url, *args, **kwargs)

    monkeypatch.setattr(RDBStorage, "__init__", counting)
    return made


def test_a_search_or_resume_of_an_existing_study_opens_its_storage_once(tmp_path, monkeypatch, opened):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/once.db"
    space = write_space(tmp_path, steps=2)
    nas.search(space, study="once", storage=url, trials=1, sampler="random")
    assert opened == [url]  # a new study: made, filled and read back through one storage
    opened.clear()
    df = nas.search(space, study="once", storage=url, trials=2)
    assert len(df) == 2 and opened == [url]
    opened.clear()
    df = nas.resume("once", storage=url, trials=3)
    assert len(df) == 3 and opened == [url]


def test_a_loaded_study_beats_with_its_stored_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/beat.db"
    nas.search(write_space(tmp_path, steps=2), study="beat", storage=url, trials=1, sampler="random", heartbeat=7)
    study, config = load_study(url, "beat")
    storage = storage_of(study)
    assert (config.heartbeat_interval, config.grace_period) == (7, 28)
    assert storage.get_heartbeat_interval() == 7
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, RetryHeartbeatStaleTrialCallback)
    plain = open_storage(url, create=False)  # a storage not yet told whose it is: the defaults
    assert plain.get_heartbeat_interval() == 5 and plain.grace_period == 20


def test_one_message_says_a_study_is_missing(tmp_path):
    url = f"sqlite:///{tmp_path}/none.db"
    optuna.create_study(study_name="there", storage=open_storage(url, create=True))
    message = f"no study 'absent' in {url}; studies there: ['there']"
    for read in (lambda: load_study(url, "absent"), lambda: nas.load_trials(url, "absent"),
                 lambda: study_summary(url, "absent"), lambda: delete_study(url, "absent"),
                 lambda: require_study(open_storage(url, create=False), "absent", url)):
        with pytest.raises(nas.UserError) as e:
            read()
        assert str(e.value) == message
    with pytest.raises(nas.UserError, match=r"^no study 'absent' in this storage; studies there: \['there'\]$"):
        nas.load_trials(open_storage(url, create=False), "absent")  # a storage object: no URL to name
