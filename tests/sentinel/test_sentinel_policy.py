"""Policy (v2) parsing: defaults, round trips, percentile thresholds, and errors that name the key path."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfygate.sentinel import CHECK_NAMES, DEFAULT_POLICY, Policy, PolicyInvalid, SentinelError

DEFAULT_DICT = {
    "checks": {
        "decode": "reject",
        "finite": "reject",
        "blank": {"reject": 0.02},
        "noise": {"reject": 0.2},
        "silence": {"reject": -60.0},
        "duplicate": {"reject": 2, "window": 200},
        "clip_alignment": {"reject": 0.2},
        "aesthetic": "off",
        "nsfw": "off",
        "blur": {"flag": 10.0},
        "colour_entropy": {"flag": 1.0},
    },
    "prompt_input": "prompt",
    "retries": 0,
    "best_of": 1,
    "rank_by": None,
    "review_sample_rate": 0.0,
}


def test_none_and_empty_give_the_default_policy():
    default = Policy.from_dict(None)
    assert default.to_dict() == DEFAULT_DICT
    assert json.loads(json.dumps(DEFAULT_POLICY, default=dict)) == DEFAULT_DICT
    assert Policy.from_dict({}) == default == Policy.default()
    assert [name for name in CHECK_NAMES if default.on(name)] == [
        "decode", "finite", "blank", "noise", "silence", "duplicate", "clip_alignment", "blur", "colour_entropy",
    ]
    assert default.uses_clip and not default.uses_aesthetic and not default.uses_nsfw
    assert (default.retries, default.best_of, default.review_sample_rate) == (0, 1, 0.0)
    assert default.prompt_input == "prompt"
    assert default.duplicate_window == 200
    assert default.rank_by is None and default.rank_by_check == "clip_alignment"
    assert default.percentile_checks == frozenset()


def test_integrity_only_keeps_the_cheap_checks():
    policy = Policy.integrity_only()
    assert [name for name in CHECK_NAMES if policy.on(name)] == ["decode", "finite", "blank", "noise", "silence"]
    assert not policy.uses_clip
    assert policy.prompt_input is None
    assert policy.duplicate_window == 0
    assert policy.rank_by_check is None


def test_round_trip_through_json():
    source = {
        "checks": {
            "decode": "review",
            "blank": {"reject": 0.01, "review": 0.05},
            "duplicate": {"review": 6, "window": 50},
            "clip_alignment": {"reject": 0.15, "review": {"percentile": 10, "fallback": 0.2}},
            "aesthetic": {"review": 4.5},
            "nsfw": {"reject": 0.9, "review": {"percentile": 5, "min_samples": 20, "fallback": 0.5}},
            "blur": "off",
        },
        "prompt_input": "positive",
        "retries": 3,
        "best_of": 4,
        "rank_by": "aesthetic",
        "review_sample_rate": 0.05,
    }
    policy = Policy.from_dict(source)
    stored = json.loads(json.dumps(policy.to_dict()))
    assert Policy.from_dict(stored) == policy
    assert stored["checks"]["clip_alignment"]["review"] == {"percentile": 10.0, "min_samples": 50, "fallback": 0.2}
    assert stored["checks"]["duplicate"] == {"review": 6, "window": 50}
    assert stored["checks"]["noise"] == DEFAULT_DICT["checks"]["noise"]  # left out: the default
    assert stored["checks"]["blur"] == "off"
    assert policy.percentile_checks == {"clip_alignment", "nsfw"}
    assert policy.uses_aesthetic and policy.uses_nsfw and policy.uses_clip
    assert (policy.retries, policy.best_of, policy.rank_by_check, policy.review_sample_rate) == (
        3, 4, "aesthetic", 0.05)
    for made in (Policy.default(), Policy.integrity_only()):
        assert Policy.from_dict(json.loads(json.dumps(made.to_dict()))) == made


def test_a_check_given_replaces_its_default_whole():
    policy = Policy.from_dict({"checks": {"blank": {"review": 0.1}}})
    assert policy.to_dict()["checks"]["blank"] == {"review": 0.1}
    assert policy.resolve().check("blank").thresholds == {"review": 0.1}


def test_rank_by_is_chosen_automatically():
    assert Policy.from_dict({"checks": {"aesthetic": {"reject": 3}}}).rank_by_check == "aesthetic"
    assert Policy.from_dict({"checks": {"clip_alignment": "off"}}).rank_by_check is None
    assert Policy.from_dict({"rank_by": "noise"}).rank_by_check == "noise"


def test_integer_values_are_numbers_and_whole_floats_are_integers():
    policy = Policy.from_dict({"checks": {"noise": {"reject": 0}, "blank": {"reject": 1}}, "retries": 2.0})
    assert policy.resolve().check("noise").thresholds == {"reject": 0.0}
    assert policy.retries == 2 and isinstance(policy.retries, int)


def test_fixed_thresholds_resolve_without_history():
    resolved = Policy.default().resolve({})
    assert resolved.policy == Policy.default()
    assert resolved.thresholds["blank"] == {"reject": 0.02}
    assert resolved.threshold_sources["blank"] == {"reject": "fixed"}
    assert resolved.threshold_sources["blur"] == {"flag": "fixed"}
    assert "aesthetic" not in resolved.thresholds  # off
    assert resolved.check("duplicate").window == 200


PERCENTILE_POLICY = {"checks": {
    "clip_alignment": {"reject": 0.1, "review": {"percentile": 10, "min_samples": 50, "fallback": 0.2}},
    "nsfw": {"review": {"percentile": 10, "min_samples": 50, "fallback": 0.6}},
}}


def test_percentile_thresholds_fall_back_below_min_samples():
    policy = Policy.from_dict(PERCENTILE_POLICY)
    resolved = policy.resolve({"clip_alignment": [0.3] * 12})

    assert resolved.thresholds["clip_alignment"] == {"reject": 0.1, "review": 0.2}
    assert resolved.threshold_sources["clip_alignment"] == {"reject": "fixed", "review": "fallback (12 of 50 recent)"}
    assert resolved.thresholds["nsfw"] == {"review": 0.6}
    assert resolved.threshold_sources["nsfw"] == {"review": "fallback (0 of 50 recent)"}


def test_percentile_thresholds_resolve_from_history():
    policy = Policy.from_dict(PERCENTILE_POLICY)
    clip_scores = [index / 100 for index in range(101)]  # 0.00 .. 1.00: p10 is 0.10
    nsfw_scores = [index / 200 for index in range(201)]  # 0.000 .. 1.000: the top 10% start at 0.9
    resolved = policy.resolve({
        "clip_alignment": [*clip_scores, None, float("nan")],  # missing and non-finite scores are ignored
        "nsfw": nsfw_scores,
    })

    assert resolved.thresholds["clip_alignment"]["review"] == pytest.approx(0.10)
    assert resolved.threshold_sources["clip_alignment"]["review"] == "p10 of 101 recent"
    assert resolved.thresholds["nsfw"]["review"] == pytest.approx(0.9)
    assert resolved.threshold_sources["nsfw"]["review"] == "p90 of 201 recent"


def test_percentile_with_a_skewed_history_tracks_the_distribution():
    policy = Policy.from_dict({"checks": {"blank": {"reject": {"percentile": 50, "min_samples": 3, "fallback": 0.02}}}})
    assert policy.resolve({"blank": [0.1, 0.2, 0.3, 0.9]}).thresholds["blank"]["reject"] == pytest.approx(0.25)


def test_old_v1_policies_are_refused_saying_the_format_changed():
    v1 = {"checks": {"blank": {"enabled": True, "action": "reject", "threshold": 0.02}}}
    with pytest.raises(PolicyInvalid) as caught:
        Policy.from_dict(v1)
    assert caught.value.path == "checks.blank.enabled"
    assert 'policy format changed: use "reject"/"review" bands' in str(caught.value)

    with pytest.raises(PolicyInvalid, match="policy format changed") as caught:
        Policy.from_dict({"checks": {"decode": {"enabled": False, "action": "reject"}}})
    assert caught.value.path == "checks.decode.enabled"


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ({"checks": {"blank": {"reject": 1.5}}}, "checks.blank.reject", "must be a number from 0 to 1"),
        ({"checks": {"noise": {"reject": -1.5}}}, "checks.noise.reject", "from -1 to 1"),
        ({"checks": {"noise": {"reject": "0.3"}}}, "checks.noise.reject", "must be a number or"),
        ({"checks": {"noise": {"reject": True}}}, "checks.noise.reject", "must be a number or"),
        ({"checks": {"noise": {"reject": float("nan")}}}, "checks.noise.reject", "from -1 to 1"),
        ({"checks": {"noise": {"reject": None}}}, "checks.noise.reject", "must be a number or"),
        ({"checks": {"duplicate": {"reject": 2.5}}}, "checks.duplicate.reject", "whole number from 0 to 64"),
        ({"checks": {"duplicate": {"reject": 65}}}, "checks.duplicate.reject", "whole number from 0 to 64"),
        ({"checks": {"duplicate": {"reject": 2, "window": 0}}}, "checks.duplicate.window", "from 1 to 10000"),
        ({"checks": {"duplicate": {"window": 10}}}, "checks.duplicate", "give at least one of reject, review"),
        ({"checks": {"aesthetic": {"reject": 11}}}, "checks.aesthetic.reject", "from 0 to 10"),
        ({"checks": {"nsfw": {"reject": 2}}}, "checks.nsfw.reject", "from 0 to 1"),
        ({"checks": {"blur": {"flag": -1}}}, "checks.blur.flag", "from 0 to"),
        ({"checks": {"colour_entropy": {"flag": 13}}}, "checks.colour_entropy.flag", "from 0 to 12"),
        ({"checks": {"blur": {"reject": 5}}}, "checks.blur.reject", "soft checks only flag"),
        ({"checks": {"blank": {"flag": 0.1}}}, "checks.blank.flag", "unknown key"),
        ({"checks": {"blank": {}}}, "checks.blank", "give at least one of reject, review"),
        ({"checks": {"blank": "reject"}}, "checks.blank", 'must be "off" or an object'),
        ({"checks": {"blank": 0.02}}, "checks.blank", 'must be "off" or an object'),
        ({"checks": {"blank": {"reject": 0.2, "review": 0.1}}}, "checks.blank.review", "at least the reject"),
        ({"checks": {"nsfw": {"reject": 0.5, "review": 0.8}}}, "checks.nsfw.review", "at most the reject"),
        ({"checks": {"decode": "flag"}}, "checks.decode", 'must be "reject", "review" or "off"'),
        ({"checks": {"decode": {"reject": 1}}}, "checks.decode", 'must be "reject", "review" or "off"'),
        ({"checks": {"finite": True}}, "checks.finite", 'must be "reject", "review" or "off"'),
        ({"checks": {"blank": {"reject": {"percentile": 0, "fallback": 0.1}}}}, "checks.blank.reject.percentile",
         "between 0 and 100 (exclusive)"),
        ({"checks": {"blank": {"reject": {"percentile": 100, "fallback": 0.1}}}},
         "checks.blank.reject.percentile", "between 0 and 100"),
        ({"checks": {"blank": {"reject": {"percentile": 10}}}}, "checks.blank.reject.fallback", "is required"),
        ({"checks": {"blank": {"reject": {"fallback": 0.1}}}}, "checks.blank.reject.percentile", "is required"),
        ({"checks": {"blank": {"reject": {"percentile": 10, "fallback": 2}}}}, "checks.blank.reject.fallback",
         "from 0 to 1"),
        ({"checks": {"blank": {"reject": {"percentile": 10, "fallback": 0.1, "min_samples": 0}}}},
         "checks.blank.reject.min_samples", "whole number from 1"),
        ({"checks": {"blank": {"reject": {"percentile": 10, "fallback": 0.1, "window": 5}}}},
         "checks.blank.reject.window", "unknown key"),
        ({"checks": {"sharpness": {}}}, "checks.sharpness", "unknown check"),
        ({"checks": ["blank"]}, "checks", "must be an object"),
        ({"check": {}}, "check", "unknown key"),
        ({"prompt_input": 5}, "prompt_input", "non-empty string or null"),
        ({"prompt_input": ""}, "prompt_input", "non-empty string or null"),
        ({"retries": 11}, "retries", "whole number from 0 to 10"),
        ({"retries": -1}, "retries", "whole number from 0 to 10"),
        ({"retries": "2"}, "retries", "whole number"),
        ({"retries": 10**400}, "retries", "whole number"),
        ({"best_of": 0}, "best_of", "whole number from 1 to 8"),
        ({"best_of": 9}, "best_of", "whole number from 1 to 8"),
        ({"review_sample_rate": 1.5}, "review_sample_rate", "from 0 to 1"),
        ({"review_sample_rate": float("inf")}, "review_sample_rate", "from 0 to 1"),
        ({"rank_by": "nsfw"}, "rank_by", "checks where higher is better"),
        ({"rank_by": "decode"}, "rank_by", "checks where higher is better"),
        ({"rank_by": ["aesthetic"]}, "rank_by", "must be null or one of"),
        ({"rank_by": "aesthetic"}, "rank_by", "is off in this policy"),
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
    with pytest.raises(PolicyInvalid, match="must be a JSON object, got list") as caught:
        Policy.from_dict([])  # type: ignore[arg-type]
    assert caught.value.path == ""


def test_a_long_bad_value_is_shortened_in_the_message():
    with pytest.raises(PolicyInvalid) as caught:
        Policy.from_dict({"retries": "x" * 1000})
    assert len(str(caught.value)) < 200


# ---- fuzzing: any JSON gives a Policy or PolicyInvalid, never another exception ---------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Near-valid documents reach deeper into the parser than arbitrary JSON does.
_threshold = (st.integers(-100, 100) | st.floats(-2, 70) | _json
              | st.fixed_dictionaries({}, optional={"percentile": _json | st.floats(0, 100),
                                                    "min_samples": _json | st.integers(0, 100),
                                                    "fallback": _json | st.floats(-1, 12)}))
_band_keys = st.sampled_from(["reject", "review", "flag", "window", "enabled", "threshold", "x"])
_check_value = st.sampled_from(["reject", "review", "off", "flag"]) | st.dictionaries(_band_keys, _threshold,
                                                                                      max_size=3) | _json
_near_valid = st.fixed_dictionaries({}, optional={
    "checks": st.dictionaries(st.sampled_from([*CHECK_NAMES, "other"]), _check_value, max_size=5) | _json,
    "prompt_input": st.none() | st.text(max_size=5) | _json,
    "retries": st.integers(-2, 12) | _json,
    "best_of": st.integers(0, 10) | _json,
    "rank_by": st.none() | st.sampled_from(CHECK_NAMES) | _json,
    "review_sample_rate": st.floats(-0.5, 1.5) | _json,
    "extra": _json,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json | _near_valid)
def test_any_json_gives_a_policy_or_policy_invalid(document):
    try:
        policy = Policy.from_dict(document)
    except PolicyInvalid as exc:
        assert isinstance(exc.path, str) and str(exc)
        return
    # What parses round-trips through JSON and resolves with or without history.
    stored = json.loads(json.dumps(policy.to_dict()))
    assert Policy.from_dict(stored) == policy
    policy.resolve({})
    policy.resolve({name: [0.1 * i for i in range(60)] for name in CHECK_NAMES})
