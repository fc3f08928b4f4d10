"""Runs from creation to the end, through the worker's conditional state changes and the watchdog."""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from comfygate.platform.celery_app import create_celery
from comfygate.platform.db import session_scope
from comfygate.platform.dispatch import Dispatcher
from comfygate.platform.errors import Conflict, Unprocessable
from comfygate.platform.models import Run, RunStatus, WebhookDelivery, utcnow
from comfygate.platform.services import runs as run_service
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.uploads import ImageLimits
from comfygate.platform.storage import LocalStorage
from comfygate.platform.watchdog import sweep
from comfygate.platform.webhooks import WebhookTargets
from comfygate.settings import Settings

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 22)
# The webhook hosts these tests name, allowed without a DNS lookup.
WEBHOOK_TARGETS = WebhookTargets.allowing(["hooks.example", "127.0.0.1"])


@pytest.fixture
def version_id(sessions, registry, card_workflow):
    with session_scope(sessions) as session:
        result = workflow_service.push_version(
            session, registry, name="card", workflow=card_workflow,
            inputs_spec={"background": {"node": "1", "input": "color"}})
        return result.version.id


def new_run(sessions, registry, tmp_path, version_id, inputs, webhook=None):
    with session_scope(sessions) as session:
        version = session.get(workflow_service.WorkflowVersion, version_id)
        run = run_service.create_run(session, registry, LocalStorage(tmp_path / "files"), LIMITS, version,
                                     inputs, {}, None, webhook=webhook, webhook_targets=WEBHOOK_TARGETS)
        return run.id


def outbox(sessions, run_id):
    """(event, run status in the payload) of every webhook delivery queued for the run."""
    with session_scope(sessions) as session:
        rows = session.query(WebhookDelivery).filter_by(run_id=run_id).order_by(WebhookDelivery.id).all()
        return [(row.event, row.payload["run"]["status"]) for row in rows]


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
    outputs = [output_record(0, "pass"), output_record(1, "reject", ["blank: uniform"])]
    with session_scope(sessions) as session:
        assert run_service.finish_run(session, run_id, 1, outputs, {"execute_ms": 1.0}) == RunStatus.REJECTED
    with session_scope(sessions) as session:
        body = run_service.run_to_dict(run_service.get_run(session, run_id))
    assert [o["released"] for o in body["outputs"]] == [True, False]
    assert "blank" in body["outputs"][1]["withheld_reason"]
    with session_scope(sessions) as session:  # a late second finish (lost worker) changes nothing
        assert run_service.finish_run(session, run_id, 1, [], {}) is None


def output_record(index, decision, reasons=()):
    return run_service.OutputRecord(
        index=index, node_id="8", filename="x.png", content_type="image/png", width=8, height=8, size_bytes=10,
        storage_key=f"runs/a/{index}.png", decision=decision,
        verdict={"decision": decision, "passed": decision == "pass", "reasons": list(reasons) or [decision]})


@pytest.mark.parametrize(("decisions", "status"), [(["pass", "review"], RunStatus.HELD),
                                                   (["review", "reject"], RunStatus.REJECTED),
                                                   (["pass", "pass"], RunStatus.SUCCEEDED)])
def test_the_worst_decision_sets_the_run_status(sessions, registry, tmp_path, version_id, decisions, status):
    run_id = new_run(sessions, registry, tmp_path, version_id, {}, webhook="https://hooks.example/x")
    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 1, "w1")
    with session_scope(sessions) as session:
        records = [output_record(i, d) for i, d in enumerate(decisions)]
        assert run_service.finish_run(session, run_id, 1, records, {}) == status
    body = status_of(sessions, run_id)
    assert [o.review_state for o in body.outputs] == [None if d == "pass" else "pending" for d in decisions]
    # Only a run that needs no reviewer announces its end now; the others' webhook waits for the review.
    assert outbox(sessions, run_id) == ([("run.ended", "succeeded")] if status == RunStatus.SUCCEEDED else [])
    assert status in RunStatus.TERMINAL  # a waiting caller is answered either way


def test_every_end_without_review_queues_the_webhook_in_the_same_change(sessions, registry, tmp_path,
                                                                       version_id, watchdog_settings):
    hook = "http://127.0.0.1:8000/hook"
    canceled = new_run(sessions, registry, tmp_path, version_id, {}, webhook=hook)
    with session_scope(sessions) as session:
        run_service.cancel_run(session, canceled)
    failed = new_run(sessions, registry, tmp_path, version_id, {}, webhook=hook)
    with session_scope(sessions) as session:
        run_service.claim_run(session, failed, 1, "w1")
    with session_scope(sessions) as session:
        assert run_service.fail_run(session, failed, 1, RunStatus.FAILED, {"message": "boom"})
    lost = new_run(sessions, registry, tmp_path, version_id, {}, webhook=hook)
    quiet = new_run(sessions, registry, tmp_path, version_id, {})  # asked for no webhook
    for run_id in (lost, quiet):
        with session_scope(sessions) as session:
            run_service.claim_run(session, run_id, 1, "w1")
    watchdog = watchdog_settings.replace(max_attempts=1)
    dispatcher = Dispatcher(create_celery(watchdog), watchdog.queue_name)
    age_heartbeat(sessions, lost, 30)
    age_heartbeat(sessions, quiet, 30)
    assert sorted(sweep(sessions, watchdog, dispatcher).failed) == sorted([lost, quiet])

    assert outbox(sessions, canceled) == [("run.ended", "canceled")]
    assert outbox(sessions, failed) == [("run.ended", "failed")]
    assert outbox(sessions, lost) == [("run.ended", "failed")]
    assert outbox(sessions, quiet) == []
    with session_scope(sessions) as session:
        delivery = session.query(WebhookDelivery).filter_by(run_id=failed).one()
        assert delivery.url == hook and delivery.state == "pending" and delivery.attempts == 0
        assert delivery.payload == {"event": "run.ended", "run": delivery.payload["run"]}
        assert delivery.payload["run"]["error"] == {"message": "boom"}


@pytest.mark.parametrize("webhook", ["ftp://example.com/x", "example.com/hook", "http://", 42,
                                     "https://example.com/" + "a" * 2048, "http://exa mple.com/",
                                     "http://example.com:99999/"])
def test_a_bad_webhook_url_is_refused_naming_the_field(sessions, registry, tmp_path, version_id, webhook):
    with pytest.raises(Unprocessable) as refused:
        new_run(sessions, registry, tmp_path, version_id, {}, webhook=webhook)
    assert refused.value.details == {"field": "webhook"} and "webhook" in refused.value.message
    with session_scope(sessions) as session:
        assert session.query(Run).count() == 0


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


def test_a_run_handed_back_by_its_engine_is_queued_again_then_failed(sessions, registry, tmp_path, version_id):
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 1, "w1", "comfyui")
    with session_scope(sessions) as session:
        assert run_service.give_back(session, run_id, 1, 2, "ComfyUI died") == RunStatus.QUEUED
        assert run_service.give_back(session, run_id, 1, 2, "ComfyUI died") is None  # no longer ours
    run = status_of(sessions, run_id)
    assert (run.status, run.attempt, run.worker, run.engine) == (RunStatus.QUEUED, 2, None, "comfyui")

    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 2, "w2", "comfyui")
    with session_scope(sessions) as session:
        assert run_service.give_back(session, run_id, 2, 2, "ComfyUI died") == RunStatus.FAILED
    run = status_of(sessions, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error["type"] == "engine_unavailable" and "giving up after 2 attempts" in run.error["message"]


def test_a_run_canceled_while_its_engine_failed_ends_canceled_not_queued(sessions, registry, tmp_path, version_id,
                                                                         watchdog_settings):
    run_id = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 1, "w1", "comfyui")
    with session_scope(sessions) as session:
        run_service.cancel_run(session, run_id)
    with session_scope(sessions) as session:
        assert run_service.give_back(session, run_id, 1, 3, "ComfyUI died") == RunStatus.CANCELED
    assert status_of(sessions, run_id).status == RunStatus.CANCELED

    # A cancel that lands on a run just handed back (queued, flag set) is ended by the watchdog.
    other = new_run(sessions, registry, tmp_path, version_id, {})
    with session_scope(sessions) as session:
        session.execute(update(Run).where(Run.id == other).values(cancel_requested=True))
        assert run_service.redispatched(session, other, 1) is False  # not sent again: nobody would claim it
    dispatcher = Dispatcher(create_celery(watchdog_settings), watchdog_settings.queue_name)
    assert sweep(sessions, watchdog_settings, dispatcher).failed == [other]
    assert status_of(sessions, other).status == RunStatus.CANCELED
