"""Policy parsing: defaults, round trips, and errors that name the offending key path."""

from __future__ import annotations

import json

import pytest

from comfygate.sentinel import CHECK_NAMES, Policy, PolicyInvalid, SentinelError

DEFAULT_POLICY = {
    "checks": {
        "decode": {"enabled": True, "action": "reject"},
        "finite": {"enabled": True, "action": "reject"},
        "blank": {"enabled": True, "action": "reject", "threshold": 0.02},
        "noise": {"enabled": True, "action": "reject", "threshold": 0.2},
        "clip_alignment": {"enabled": True, "action": "reject", "threshold": 0.2},
    },
    "prompt_input": "prompt",
}


def test_none_and_empty_give_the_default_policy():
    assert Policy.from_dict(None).to_dict() == DEFAULT_POLICY
    assert Policy.from_dict({}) == Policy.from_dict(None)
    assert all(Policy.from_dict(None).enabled(name) for name in CHECK_NAMES)
    assert Policy.from_dict(None).uses_clip


def test_integrity_only_turns_clip_off():
    policy = Policy.integrity_only()
    assert [name for name in CHECK_NAMES if policy.enabled(name)] == ["decode", "finite", "blank", "noise"]
    assert not policy.uses_clip
    assert policy.prompt_input is None


def test_round_trip_through_json():
    source = {
        "checks": {
            "blank": {"threshold": 0.05, "action": "flag"},
            "clip_alignment": {"enabled": False},
        },
        "prompt_input": "positive",
    }
    policy = Policy.from_dict(source)
    stored = json.loads(json.dumps(policy.to_dict()))
    assert Policy.from_dict(stored) == policy
    assert stored["checks"]["blank"] == {"enabled": True, "action": "flag", "threshold": 0.05}
    assert stored["checks"]["noise"] == DEFAULT_POLICY["checks"]["noise"]
    assert stored["checks"]["clip_alignment"]["enabled"] is False
    assert policy.prompt_input == "positive"
    assert Policy.from_dict(Policy.integrity_only().to_dict()) == Policy.integrity_only()


def test_integer_thresholds_at_the_bounds_are_numbers():
    policy = Policy.from_dict({"checks": {"noise": {"threshold": 0}, "blank": {"threshold": 1}}})
    assert policy.settings("noise").threshold == 0.0
    assert policy.settings("blank").threshold == 1.0


def test_prompt_input_may_be_null():
    assert Policy.from_dict({"prompt_input": None}).prompt_input is None


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ({"checks": {"blank": {"threshold": 1.5}}}, "checks.blank.threshold",
         "must be a number between 0 and 1"),
        ({"checks": {"noise": {"threshold": -0.1}}}, "checks.noise.threshold", "between 0 and 1"),
        ({"checks": {"noise": {"threshold": "0.3"}}}, "checks.noise.threshold", "between 0 and 1"),
        ({"checks": {"noise": {"threshold": True}}}, "checks.noise.threshold", "between 0 and 1"),
        ({"checks": {"noise": {"threshold": float("nan")}}}, "checks.noise.threshold", "between 0 and 1"),
        ({"checks": {"clip_alignment": {"threshold": None}}}, "checks.clip_alignment.threshold",
         "between 0 and 1"),
        ({"checks": {"decode": {"threshold": 0.5}}}, "checks.decode.threshold", "unknown key"),
        ({"checks": {"blank": {"action": "warn"}}}, "checks.blank.action", "reject, flag"),
        ({"checks": {"blank": {"action": ["reject"]}}}, "checks.blank.action", "reject, flag"),
        ({"checks": {"blank": {"enabled": "yes"}}}, "checks.blank.enabled", "true or false"),
        ({"checks": {"blank": {"enabled": 1}}}, "checks.blank.enabled", "true or false"),
        ({"checks": {"blank": {"threshhold": 0.1}}}, "checks.blank.threshhold", "unknown key"),
        ({"checks": {"aesthetic": {}}}, "checks.aesthetic", "unknown check"),
        ({"checks": {"blank": 0.02}}, "checks.blank", "must be an object"),
        ({"checks": ["blank"]}, "checks", "must be an object"),
        ({"check": {}}, "check", "unknown key"),
        ({"prompt_input": 5}, "prompt_input", "non-empty string or null"),
        ({"prompt_input": ""}, "prompt_input", "non-empty string or null"),
    ],
)
def test_bad_documents_are_refused_naming_the_key_path(document, path, message):
    with pytest.raises(PolicyInvalid) as caught:
        Policy.from_dict(document)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert isinstance(caught.value, SentinelError)


def test_a_policy_must_be_an_object():
    with pytest.raises(PolicyInvalid, match="must be a JSON object, got list"):
        Policy.from_dict([])  # type: ignore[arg-type]
