import pytest
from review_support import record_rejected_output

from comfygate.platform.db import session_scope
from comfygate.platform.errors import Conflict, NotFound, Unprocessable
from comfygate.platform.models import ReviewDecision, RunStatus
from comfygate.platform.services import accounts, review
from comfygate.platform.services import runs as run_service
from comfygate.platform.storage import LocalStorage


@pytest.fixture
def rejected_output_id(sessions, registry, blank_workflow, tmp_path):
    """A run whose single output the sentinel failed, as the worker records it."""
    return record_rejected_output(sessions, registry, LocalStorage(tmp_path), blank_workflow)


def test_a_review_item_says_why_the_gate_withheld_it(sessions, rejected_output_id):
    with session_scope(sessions) as session:
        (item,) = [review.review_item(o) for o in review.pending_outputs(session)]
    assert item["output_id"] == rejected_output_id and item["decision"] == "reject"
    assert item["reason_codes"] == ["blank"] and item["scores"] == {"blank": 0.0}
    assert not item["sampled"] and not item["released"] and item["run_status"] == "rejected"
    assert item["attempts"] == []  # recorded without a gate loop


def test_approve_releases_the_output_and_the_run_succeeds(sessions, rejected_output_id):
    with session_scope(sessions) as session:
        output = review.decide(session, rejected_output_id, "approve", "admin", "looks fine")
        assert output.released and output.review_state == "approved"
        assert output.run.status == RunStatus.SUCCEEDED
        assert review.pending_outputs(session) == []
        decision = session.query(ReviewDecision).one()
        assert (decision.decision, decision.decided_by, decision.note) == ("approve", "admin", "looks fine")


def test_reject_keeps_it_withheld_and_records_the_label(sessions, rejected_output_id):
    with session_scope(sessions) as session:
        output = review.decide(session, rejected_output_id, "reject", "admin")
        assert not output.released and output.run.status == RunStatus.REJECTED
        assert "rejected by a reviewer" in run_service.withheld_reason(output)
    with session_scope(sessions) as session, pytest.raises(Conflict):
        review.decide(session, rejected_output_id, "approve", "admin")


def test_bad_decisions_are_refused(sessions, rejected_output_id):
    with session_scope(sessions) as session, pytest.raises(Unprocessable, match="decision"):
        review.decide(session, rejected_output_id, "maybe", "admin")
    with session_scope(sessions) as session, pytest.raises(NotFound):
        review.decide(session, 999_999, "approve", "admin")


def test_api_keys_are_stored_hashed_and_checked(sessions):
    with session_scope(sessions) as session:
        created = accounts.create_api_key(session, "ci", is_admin=False)
    with session_scope(sessions) as session:
        row = accounts.authenticate_key(session, created.secret)
        assert row is not None and not row.is_admin
        assert created.secret.split("_", 2)[2] not in row.secret_hash
        assert accounts.authenticate_key(session, created.secret + "x") is None
        assert accounts.authenticate_key(session, "not-a-key") is None


def test_first_start_creates_an_admin_once_and_login_works(sessions):
    with session_scope(sessions) as session:
        first = accounts.bootstrap_admin(session)
    assert first is not None and first.key.is_admin
    with session_scope(sessions) as session:
        assert accounts.bootstrap_admin(session) is None
        assert accounts.login(session, "admin", "wrong") is None
        token, row = accounts.login(session, "admin", first.password)
    with session_scope(sessions) as session:
        assert accounts.session_user(session, token).user.username == "admin"
        accounts.logout(session, token)
    with session_scope(sessions) as session:
        assert accounts.session_user(session, token) is None


def test_a_revoked_key_no_longer_authenticates(sessions):
    with session_scope(sessions) as session:
        created = accounts.create_api_key(session, "temp")
    prefix = created.secret.split("_")[1]
    with session_scope(sessions) as session:
        accounts.revoke_api_key(session, prefix)
    with session_scope(sessions) as session:
        assert accounts.authenticate_key(session, created.secret) is None
    with session_scope(sessions) as session, pytest.raises(NotFound):
        accounts.revoke_api_key(session, "nope")
