"""Reading an export back (`nas.load_trials` of a .csv or .parquet): a file whose meaning does not
fit its table, a junk file, a key given twice in its metadata and arguments of the wrong type end in
one line naming the file, when the file is loaded (not later, in pareto_front)."""

import pandas as pd
import pytest

from nas.results.trials import load_trials, pareto_front


def _export(tmp_path, suffix, **attrs):
    """A tiny trials table exported as ``suffix``, with ``attrs`` over a valid set."""
    from nas.results.files import write_export

    df = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "COMPLETE"], "accuracy": [0.5, 0.7],
                       "params": [10, 20], "feasible": pd.array([True, True], dtype="boolean")})
    df.attrs = {"objectives": {"accuracy": "maximize", "params": "minimize"}, "constraints": [], "study": "s", **attrs}
    path = tmp_path / f"t{suffix}"
    write_export(df, path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_export_reads_back_with_its_front(tmp_path, suffix):
    df = load_trials(_export(tmp_path, suffix))
    assert sorted(pareto_front(df)["number"]) == [0, 1]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("attrs,fragment", [
    ({"objectives": {"accuracy": "sideways", "params": "minimize"}}, "objectives.accuracy: 'sideways' is not one of"),
    ({"objectives": {"accuracy": "maximize", "loss": "minimize"}}, "objectives.loss: the table has no column 'loss'"),
    ({"objectives": {}}, "objectives: {} is not allowed"),
    ({"objectives": ["accuracy"]}, "objectives: ['accuracy'] is not allowed"),
    ({"constraints": "params<=5"}, "constraints: 'params<=5' is not allowed"),
], ids=["direction", "column", "empty", "list", "constraints"])
def test_an_export_whose_meaning_does_not_fit_its_table_is_refused_at_load(tmp_path, suffix, attrs, fragment):
    """Refused by load_trials, naming the metadata file, not by pareto_front later with a KeyError."""
    import nas
    from nas.results.files import sidecar_path

    path = _export(tmp_path, suffix, **attrs)
    with pytest.raises(nas.UserError) as e:
        load_trials(path)
    where = sidecar_path(path) if suffix == ".csv" else path
    assert str(e.value).startswith(f"{where}: ") and fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("name,data,fragment", [
    ("junk.parquet", b"PAR1 this is not parquet", "junk.parquet: cannot be read as a Parquet file"),
    ("empty.parquet", b"", "empty.parquet: cannot be read as a Parquet file"),
    ("junk.csv", b"\x00\xff\xfe\x00 not text", "junk.csv: cannot be read as the CSV table"),
    ("empty.csv", b"", "empty.csv: cannot be read as the CSV table"),
])
def test_a_junk_export_file_is_one_line(tmp_path, name, data, fragment):
    import nas
    from nas.results.files import sidecar_path

    path = tmp_path / name
    path.write_bytes(data)
    sidecar_path(_export(tmp_path, ".csv")).rename(sidecar_path(path))  # a valid sidecar: the table is at fault
    with pytest.raises(nas.UserError) as e:
        load_trials(path)
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_export_metadata_with_a_key_given_twice_is_refused(tmp_path):
    import nas
    from nas.results.files import sidecar_path

    side = sidecar_path(_export(tmp_path, ".csv"))
    side.write_text(side.read_text().replace('"format": 1,', '"format": 1, "format": 1,'))
    with pytest.raises(nas.UserError, match=r"t.csv.meta.json: not valid JSON \(key 'format' appears twice"):
        load_trials(tmp_path / "t.csv")


@pytest.mark.parametrize("source,study,fragment", [
    (42, None, "load_trials: 42 is not allowed"),
    ("sqlite:///x.db", 7, "load_trials: study 7 is not allowed"),
])
def test_load_trials_refuses_arguments_of_the_wrong_type(tmp_path, monkeypatch, source, study, fragment):
    import nas

    monkeypatch.chdir(tmp_path)
    with pytest.raises(nas.UserError, match=fragment):
        load_trials(source, study)
    assert list(tmp_path.iterdir()) == []
