"""Runs from creation to the end, through the worker's conditional state changes and the watchdog."""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from comfygate.platform.celery_app import create_celery
from comfygate.platform.db import session_scope
from comfygate.platform.dispatch import Dispatcher
from comfygate.platform.errors import Conflict, Unprocessable
from comfygate.platform.models import Run, RunStatus, utcnow
from comfygate.platform.services import runs as run_service
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.uploads import ImageLimits
from comfygate.platform.storage import LocalStorage
from comfygate.platform.watchdog import sweep
from comfygate.settings import Settings

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 22)


@pytest.fixture
def version_id(sessions, registry, card_workflow):
    with session_scope(sessions) as session:
        result = workflow_service.push_version(
            session, registry, name="card", workflow=card_workflow,
            inputs_spec={"background": {"node": "1", "input": "color"}})
        return result.version.id


def new_run(sessions, registry, tmp_path, version_id, inputs):
    with session_scope(sessions) as session:
        version = session.get(workflow_service.WorkflowVersion, version_id)
        run = run_service.create_run(session, registry, LocalStorage(tmp_path / "files"), LIMITS, version,
                                     inputs, {}, None)
        return run.id


def status_of(sessions, run_id):
    with session_scope(sessions) as session:
        return session.get(Run, run_id)


def test_inputs_are_bound_into_the_prompt(sessions, registry, tmp_path, version_id):
    run_id = new_run(sessions, registry, tmp_path, version_id, {"background": 255})
    run = status_of(sessions, run_id)
    assert run.status == RunStatus.QUEUED
    assert run.prompt["1"]["inputs"]["color"] == 255


@pytest.mark.parametrize("inputs", [{"background": -1}, {"background": "red"}, {"nope": 1}, ["x"]])
def test_bad_inputs_are_refused_before_a_run_exists(sessions, registry, tmp_path, version_id, inputs):
    with pytest.raises(Unprocessable):
        new_run(sessions, registry, tmp_path, version_id, inputs)
    with session_scope(sessions) as session:
        assert session.query(Run).count() == 0


def test_a_run_is_claimed_once_per_attempt(sessions, registry, tmp_path, version_id):
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        assert run_service.claim_run(session, run_id, 1, "w1") is not None
    with session_scope(sessions) as session:
        assert run_service.claim_run(session, run_id, 1, "w2") is None  # duplicate delivery
        assert run_service.claim_run(session, run_id, 2, "w2") is None  # stale attempt number
    with session_scope(sessions) as session:
        assert run_service.heartbeat(session, run_id, 1) == (True, False)
        assert run_service.heartbeat(session, run_id, 2) == (False, False)


def test_cancel_a_queued_run_and_refuse_to_cancel_an_ended_one(sessions, registry, tmp_path, version_id):
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        assert run_service.cancel_run(session, run_id).status == RunStatus.CANCELED
    with session_scope(sessions) as session, pytest.raises(Conflict):
        run_service.cancel_run(session, run_id)
    with session_scope(sessions) as session:
        assert run_service.claim_run(session, run_id, 1, "w1") is None


def test_cancel_of_a_running_run_is_seen_by_its_heartbeat(sessions, registry, tmp_path, version_id):
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 1, "w1")
    with session_scope(sessions) as session:
        assert run_service.cancel_run(session, run_id).status == RunStatus.RUNNING
    with session_scope(sessions) as session:
        assert run_service.heartbeat(session, run_id, 1) == (True, True)


def queued_messages(settings: Settings) -> int:
    return len(list((settings.broker_dir / "queue").glob("*.msg")))


@pytest.fixture
def watchdog_settings(tmp_path, database_url):
    return Settings(data_dir=tmp_path / "data", database_url=database_url, stale_after_seconds=5,
                    queued_timeout_seconds=60, max_attempts=2)


def age_heartbeat(sessions, run_id, seconds):
    with session_scope(sessions) as session:
        session.execute(update(Run).where(Run.id == run_id)
                        .values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def test_watchdog_requeues_a_silent_run_then_fails_it(sessions, registry, tmp_path, version_id,
                                                     watchdog_settings):
    dispatcher = Dispatcher(create_celery(watchdog_settings), watchdog_settings.queue_name)
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 1, "w1")

    assert sweep(sessions, watchdog_settings, dispatcher).requeued == []  # heartbeat is fresh
    age_heartbeat(sessions, run_id, 30)
    report = sweep(sessions, watchdog_settings, dispatcher)
    assert report.requeued == [run_id]
    run = status_of(sessions, run_id)
    assert (run.status, run.attempt) == (RunStatus.QUEUED, 2)
    assert queued_messages(watchdog_settings) == 1  # the task for attempt 2 is on the broker

    with session_scope(sessions) as session:
        assert run_service.heartbeat(session, run_id, 1) == (False, False)  # the lost worker lost it
        assert run_service.claim_run(session, run_id, 2, "w2") is not None
    age_heartbeat(sessions, run_id, 30)
    report = sweep(sessions, watchdog_settings, dispatcher)
    assert report.failed == [run_id]
    run = status_of(sessions, run_id)
    assert run.status == RunStatus.FAILED
    assert "went silent" in run.error["message"] and "attempt 2 of 2" in run.error["message"]


def test_watchdog_resends_a_run_whose_message_was_lost(sessions, registry, tmp_path, version_id,
                                                      watchdog_settings):
    dispatcher = Dispatcher(create_celery(watchdog_settings), watchdog_settings.queue_name)
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        session.execute(update(Run).where(Run.id == run_id)
                        .values(dispatched_at=utcnow() - timedelta(seconds=120)))
    report = sweep(sessions, watchdog_settings, dispatcher)
    assert report.redispatched == [run_id]
    assert queued_messages(watchdog_settings) == 1
    assert sweep(sessions, watchdog_settings, dispatcher).redispatched == []  # not again right away


def test_finish_records_outputs_and_rejects_when_one_fails(sessions, registry, tmp_path, version_id):
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 1, "w1")
    record = dict(node_id="8", filename="x.png", content_type="image/png", width=8, height=8, size_bytes=10)
    outputs = [
        run_service.OutputRecord(index=0, storage_key="runs/a/0.png", verdict={"passed": True, "reasons": []},
                                 passed=True, **record),
        run_service.OutputRecord(index=1, storage_key="runs/a/1.png",
                                 verdict={"passed": False, "reasons": ["blank"]}, passed=False, **record),
    ]
    with session_scope(sessions) as session:
        assert run_service.finish_run(session, run_id, 1, outputs, {"execute_ms": 1.0}) == RunStatus.REJECTED
    with session_scope(sessions) as session:
        body = run_service.run_to_dict(run_service.get_run(session, run_id))
    assert [o["released"] for o in body["outputs"]] == [True, False]
    assert "blank" in body["outputs"][1]["withheld_reason"]
    with session_scope(sessions) as session:  # a late second finish (lost worker) changes nothing
        assert run_service.finish_run(session, run_id, 1, [], {}) is None


def test_default_storage_folder_is_not_used(tmp_path):
    # The fixtures give every test its own storage folder under tmp_path.
    assert not Path("data/files").is_relative_to(tmp_path)


def test_watchdog_ends_a_cancel_requested_run_whose_worker_died_as_canceled(sessions, registry, tmp_path,
                                                                           version_id, watchdog_settings):
    dispatcher = Dispatcher(create_celery(watchdog_settings), watchdog_settings.queue_name)
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 1, "w1")
    with session_scope(sessions) as session:
        run_service.cancel_run(session, run_id)
    age_heartbeat(sessions, run_id, 30)
    assert sweep(sessions, watchdog_settings, dispatcher).failed == [run_id]
    assert status_of(sessions, run_id).status == RunStatus.CANCELED
    assert queued_messages(watchdog_settings) == 0
