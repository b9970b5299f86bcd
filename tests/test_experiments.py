"""Experiments as the registry creates them: artifacts beside a sqlite store, safe when created at once."""

import multiprocessing

from mlflow import MlflowClient

from store.experiments import artifact_location, experiment_id


def test_artifact_locations_are_chosen_only_for_sqlite_files(tmp_path):
    assert artifact_location(f"sqlite:///{tmp_path}/a.db", "ptq sweep/2") == str(tmp_path / "a-artifacts" / "ptq-sweep-2")
    assert artifact_location("sqlite:///rel.db?timeout=5", "x") == str(tmp_path / "rel-artifacts" / "x")
    for uri in ("sqlite:///:memory:", "postgresql://u@h/db", "http://localhost:5000", "", None):
        assert artifact_location(uri, "x") is None


def _create(uri, barrier, queue):
    client = MlflowClient(uri)
    client.search_experiments()  # connected and migrated before the race starts
    barrier.wait()
    try:
        queue.put(experiment_id(client, "ptq-sweep", "made by whichever process wins"))
    except Exception as err:  # the failure this test is about, reported to the parent
        queue.put(f"{type(err).__name__}: {err}")


def test_processes_creating_the_same_experiment_at_once_all_get_it(tmp_path, _migrated_store):
    import shutil

    # without the retry in experiment_id, five of the six die on MLflow's UNIQUE constraint
    path = tmp_path / "race.db"
    shutil.copyfile(_migrated_store, path)
    uri = f"sqlite:///{path}"
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(6), context.Queue()
    workers = [context.Process(target=_create, args=(uri, barrier, queue)) for _ in range(6)]
    for w in workers:
        w.start()
    ids = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert len(set(ids)) == 1 and ids[0].isdigit(), ids
    assert MlflowClient(uri).get_experiment_by_name("ptq-sweep").experiment_id == ids[0]
