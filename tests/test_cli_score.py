"""`comfygate score IMAGE...`, run as a user runs it: the installed command on real image files (and the
settings listing, which must not print the webhook signing key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from sentinel_images import encode, scene
from tiny_clip import caption, colour_image

from comfygate.cli import main


def comfygate_score(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfygate", "score", *args], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "COMFYGATE_DATA_DIR": "/nonexistent-not-needed",
                                            **(env or {})})


def verdicts(done: subprocess.CompletedProcess) -> dict[str, dict]:
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return {Path(line["image"]).name: line for line in lines}


def checks(verdict: dict) -> dict[str, dict]:
    return {check["name"]: check for check in verdict["checks"]}


def test_each_image_gets_a_verdict_line_with_its_reasons(tmp_path):
    (tmp_path / "scene.png").write_bytes(encode(scene(96)))
    (tmp_path / "black.png").write_bytes(encode(Image.new("RGB", (96, 96), (0, 0, 0))))
    (tmp_path / "cut.png").write_bytes(encode(scene(96))[:300])  # a PNG header, then the data stops
    (tmp_path / "again.png").write_bytes(encode(scene(96)))  # the same picture as scene.png
    names = ["scene.png", "black.png", "cut.png", "again.png"]

    # Batches of 2: "again.png" is in the second batch, so it is compared with the first batch as history.
    done = comfygate_score(*(str(tmp_path / n) for n in names), env={"COMFYGATE_SENTINEL_BATCH_SIZE": "2"})

    assert done.returncode == 1, done.stderr
    assert [Path(json.loads(line)["image"]).name for line in done.stdout.splitlines()] == names
    found = verdicts(done)
    assert found["scene.png"]["decision"] == "pass" and found["scene.png"]["passed"] is True
    assert checks(found["scene.png"])["blank"]["status"] == "passed"
    assert checks(found["scene.png"])["decode"]["score"] == 1.0
    # No CLIP model in the settings: the alignment check says it did not run, never that it passed.
    assert checks(found["scene.png"])["clip_alignment"]["status"] == "not_run"
    assert found["black.png"]["decision"] == "reject" and "blank" in found["black.png"]["reason_codes"]
    assert found["cut.png"]["decision"] == "reject" and found["cut.png"]["reason_codes"] == ["undecodable"]
    assert found["cut.png"]["retryable"] is False
    assert found["again.png"]["decision"] == "reject" and found["again.png"]["reason_codes"] == ["exact_duplicate"]
    assert any("scene.png" in reason for reason in found["again.png"]["reasons"])


def test_all_passing_exits_0(tmp_path):
    path = tmp_path / "scene.jpg"
    scene(96).save(path, "JPEG", quality=95)
    done = comfygate_score(str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    (verdict,) = verdicts(done).values()
    assert verdict["decision"] == "pass" and checks(verdict)["decode"]["status"] == "passed"


def test_prompt_alignment_scores_appear_with_a_clip_model(tmp_path, tiny_clip, monkeypatch, capsys):
    model_name, weights = tiny_clip
    for colour in ("red", "blue"):
        colour_image(colour, size=64).save(tmp_path / f"{colour}.png")
    # Solid colours are what the tiny model knows; the pixel checks would reject them as blank.
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"checks": {"blank": "off", "noise": "off", "clip_alignment": {"reject": -1.0}}}))
    for name in [name for name in os.environ if name.startswith("COMFYGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COMFYGATE_CLIP_MODEL", model_name)
    monkeypatch.setenv("COMFYGATE_CLIP_WEIGHTS", str(weights))

    # In this process (torch is loaded already): main() is what the installed command calls.
    status = main(["score", str(tmp_path / "red.png"), str(tmp_path / "blue.png"), "--prompt", caption("red"),
                   "--policy", str(policy)])

    out = capsys.readouterr()
    assert status == 0, out.out + out.err
    found = {Path(line["image"]).name: line for line in map(json.loads, out.out.splitlines())}
    red, blue = (checks(found[f"{c}.png"])["clip_alignment"] for c in ("red", "blue"))
    assert red["status"] == blue["status"] == "passed"
    assert found["red.png"]["scores"]["clip_alignment"] == red["score"]
    assert red["score"] > blue["score"]
    assert checks(found["red.png"])["blank"]["status"] == "not_run"  # off in this policy


def test_a_bad_policy_file_is_a_usage_error_naming_the_key(tmp_path):
    (tmp_path / "scene.png").write_bytes(encode(scene(64)))
    policy = tmp_path / "strict.json"
    policy.write_text(json.dumps({"checks": {"blank": {"reject": 2}}}))  # blank scores are 0..1
    done = comfygate_score(str(tmp_path / "scene.png"), "--policy", str(policy))
    assert done.returncode == 2 and done.stdout == ""
    assert str(policy) in done.stderr and "checks.blank.reject" in done.stderr

    policy.write_text(json.dumps({"checks": {"blank": {"enabled": True, "action": "reject"}}}))  # the v1 format
    done = comfygate_score(str(tmp_path / "scene.png"), "--policy", str(policy))
    assert done.returncode == 2 and "checks.blank" in done.stderr and "format changed" in done.stderr


def test_an_unreadable_image_path_is_a_usage_error(tmp_path):
    (tmp_path / "scene.png").write_bytes(encode(scene(64)))
    missing = tmp_path / "missing.png"
    done = comfygate_score(str(tmp_path / "scene.png"), str(missing))
    assert done.returncode == 2 and done.stdout == ""
    assert str(missing) in done.stderr


def test_the_settings_listing_masks_the_webhook_secret():
    done = subprocess.run([sys.executable, "-m", "comfygate", "settings"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "COMFYGATE_DATA_DIR": "/nonexistent-not-needed",
                               "COMFYGATE_WEBHOOK_SECRET": "hunter2-signing-key"})
    assert done.returncode == 0, done.stderr
    assert "COMFYGATE_WEBHOOK_SECRET" in done.stdout and "hunter2" not in done.stdout
