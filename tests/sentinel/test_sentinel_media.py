"""Outputs other than still images, through the gate: animations and videos (decode-checked, three frames through
the picture checks), audio (decodes, not silent), glTF binaries, text and other files (integrity only), and
files that are not what their content type says."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sentinel_images import candidate, encode, landscape, scene
from sentinel_media import (
    AUDIO_FORMATS,
    animation,
    glb,
    moving_frames,
    tone,
    video,
    with_blank_middle,
    without_id3,
)
from tiny_clip import caption_for, shape_image

from comfygate.sentinel import (
    CHECK_NAMES,
    Candidate,
    ClipScorer,
    Policy,
    RecentOutput,
    Scorers,
    Sentinel,
    image_hash,
    media_kind,
    perceptual_hash,
)

PICTURE_CHECKS = ("blank", "noise", "duplicate", "clip_alignment", "aesthetic", "nsfw", "blur", "colour_entropy")
ANIMATIONS = {"WEBP": "image/webp", "PNG": "image/png", "GIF": "image/gif"}


def evaluate(cand: Candidate, policy: Policy | None = None, sentinel: Sentinel | None = None):
    verdict = (sentinel or Sentinel()).evaluate(cand, policy or Policy.default())
    return verdict, {check.name: check for check in verdict.checks}


@pytest.fixture(scope="module")
def clip_frames() -> list[Image.Image]:
    return moving_frames(12)


# ---- animations and videos ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(ANIMATIONS))
def test_an_animation_passes_with_every_picture_check_on_its_worst_frame(fmt, clip_frames):
    verdict, checks = evaluate(Candidate(animation(clip_frames, fmt), ANIMATIONS[fmt], 128, 128))

    assert verdict.decision == "pass", verdict.reasons
    assert checks["decode"].status == "passed"
    for name in ("blank", "noise", "blur", "colour_entropy"):
        assert checks[name].status == "passed"
        assert checks[name].reason.startswith("worst of the 3 frames checked: the ")
        assert "of 12)" in checks[name].reason
    assert checks["finite"].reason == "no raw pixel values for an animation"
    assert checks["silence"].reason == f"does not apply to animations ({ANIMATIONS[fmt]})"


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_a_video_passes_and_is_known_by_its_bytes_and_middle_frame(fmt, clip_frames):
    data = video(clip_frames, fmt)
    verdict, checks = evaluate(Candidate(data, f"video/{fmt}", 128, 128, prompt="a landscape"))

    assert verdict.decision == "pass", verdict.reasons
    assert [check.name for check in verdict.checks] == list(CHECK_NAMES)
    assert checks["finite"].reason == "no raw pixel values for a video"
    assert checks["silence"].reason == f"does not apply to video (video/{fmt})"
    assert checks["clip_alignment"].reason == "no CLIP model is configured"
    # The hash the worker stores: sha256 of the file, perceptual hash of frame 7 of 12 (close to the drawn one).
    assert verdict.image_hash.sha256 == image_hash(data, clip_frames[6]).sha256
    assert (verdict.image_hash.phash ^ perceptual_hash(clip_frames[6])).bit_count() <= 2


def test_raw_pixels_given_with_a_video_are_checked(clip_frames):
    pixels = np.full((12, 128, 128, 3), 0.5, np.float32)
    pixels[3, 0, 0, 0] = np.nan
    verdict, checks = evaluate(Candidate(video(clip_frames), "video/mp4", pixels=pixels))
    assert verdict.reason_codes == ["not_finite"] and not verdict.retryable


def test_a_blank_middle_frame_rejects_the_video_naming_the_frame(clip_frames):
    verdict, checks = evaluate(Candidate(video(with_blank_middle(clip_frames)), "video/mp4"))

    assert verdict.decision == "reject" and verdict.retryable  # a new seed can fix a blank frame
    assert verdict.reason_codes == ["blank"]
    assert checks["blank"].score == 0.0
    assert checks["blank"].reason == ("the middle frame (frame 7 of 12) is blank or near-uniform "
                                      "(colour spread 0 < reject threshold 0.02)")
    assert checks["noise"].reason == "skipped: blank rejected the video"


def test_an_animation_with_a_blank_middle_frame_is_rejected(clip_frames):
    verdict, checks = evaluate(Candidate(animation(with_blank_middle(clip_frames), "PNG"), "image/png"))
    assert verdict.reason_codes == ["blank"]
    assert checks["blank"].reason.startswith("the middle frame (frame 7 of 12) is blank")


@pytest.mark.parametrize(("fmt", "keep"), [("mp4", 0.8), ("webm", 0.5), ("webm", 0.9)])
def test_a_truncated_video_does_not_decode(fmt, keep, clip_frames):
    data = video(clip_frames, fmt)
    verdict, checks = evaluate(Candidate(data[: int(len(data) * keep)], f"video/{fmt}"))

    assert verdict.decision == "reject" and not verdict.retryable
    assert verdict.reason_codes == ["undecodable"]
    assert checks["blank"].reason == "skipped: decode rejected the video"
    assert verdict.image_hash is None


def test_a_cut_webm_that_decodes_cleanly_is_still_caught_by_its_declared_length(clip_frames):
    data = video(clip_frames, "webm")
    _, checks = evaluate(Candidate(data[: int(len(data) * 0.9)], "video/webm"))
    assert "truncated or corrupt" in checks["decode"].reason


def test_a_video_of_the_wrong_size_is_rejected(clip_frames):
    verdict, checks = evaluate(Candidate(video(clip_frames), "video/mp4", 256, 128))
    assert checks["decode"].code == "wrong_size"
    assert checks["decode"].reason == "width is 128, expected 256"
    assert not verdict.retryable


def test_a_long_video_is_decoded_up_to_a_bound_and_its_last_frames_found_by_seeking(clip_frames):
    frames = moving_frames(30)
    cand = Candidate(video(frames), "video/mp4")
    full, full_checks = evaluate(cand)
    bounded, bounded_checks = evaluate(cand, sentinel=Sentinel(max_video_frames=5))

    assert bounded.decision == full.decision == "pass"
    assert bounded.image_hash == full.image_hash  # the same middle frame, reached by seeking
    for name in ("blank", "noise", "blur", "colour_entropy"):
        assert bounded_checks[name].score == full_checks[name].score
        assert bounded_checks[name].reason == full_checks[name].reason


def test_frames_larger_than_the_pixel_limit_are_refused_unread(clip_frames):
    _, checks = evaluate(Candidate(video(clip_frames), "video/mp4"), sentinel=Sentinel(max_pixels=128 * 127))
    assert checks["decode"].code == "undecodable"
    assert "more than 16256 pixels" in checks["decode"].reason

    _, checks = evaluate(Candidate(animation(clip_frames, "GIF"), "image/gif"), sentinel=Sentinel(max_pixels=10_000))
    assert checks["decode"].code == "undecodable"


def test_videos_are_compared_with_recent_outputs_by_their_middle_frame(clip_frames):
    mp4 = Candidate(video(clip_frames), "video/mp4", request_key="a")
    webm = Candidate(video(clip_frames, "webm"), "video/webm", request_key="b")
    again = Candidate(mp4.data, "video/mp4", request_key="c")
    first, reencoded, copied = Sentinel().evaluate_batch([mp4, webm, again], Policy.default())

    assert first.passed
    duplicate = {check.name: check for check in reencoded.checks}["duplicate"]
    assert duplicate.code == "near_duplicate"
    assert "near-duplicate of candidate 0 of this batch by its middle frame" in duplicate.reason
    assert copied.reason_codes == ["exact_duplicate"]

    still = Candidate(encode(clip_frames[6]), "image/png", request_key="d")
    recent = [RecentOutput(first.image_hash.sha256, first.image_hash.phash, "a", "run A output 0")]
    assert Sentinel().evaluate(still, Policy.default(), recent).reason_codes == ["near_duplicate"]


# ---- prompt alignment over frames ---------------------------------------------------------------------------


def test_one_clip_pass_covers_every_frame_and_the_worst_frame_decides(tiny_clip):
    class CountingClip(ClipScorer):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.calls: list[int] = []

        def embed_images(self, images, batch_size=None):
            self.calls.append(len(images))
            return super().embed_images(images, batch_size)

    clip = CountingClip(*tiny_clip)
    # Jittered copies: an APNG writer merges identical frames into one.
    red = [shape_image("red", "circle", np.random.default_rng(seed), size=64) for seed in range(3)]
    blue = shape_image("blue", "square", size=64)
    prompt = caption_for("red", "circle")
    policy = Policy.from_dict({"checks": {"clip_alignment": {"reject": 0.75}, "duplicate": "off", "blur": "off",
                                          "colour_entropy": "off"}})
    candidates = [
        Candidate(encode(red[0]), "image/png", prompt=prompt),
        Candidate(animation(red, "PNG"), "image/png", prompt=prompt),  # lossless frames
        Candidate(animation([red[0], blue, red[2]], "PNG"), "image/png", prompt=prompt),
    ]
    verdicts = Sentinel(Scorers(clip=clip, batch_size=16)).evaluate_batch(candidates, policy)

    assert clip.calls == [7]  # one still and two animations of three frames, in one pass
    assert [verdict.decision for verdict in verdicts] == ["pass", "pass", "reject"]
    alignment = {check.name: check for check in verdicts[2].checks}["clip_alignment"]
    assert alignment.code == "prompt_mismatch"
    assert alignment.reason.startswith("the middle frame (frame 2 of 3) does not match the prompt")
    assert verdicts[1].score("clip_alignment") > 0.75


# ---- audio ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", sorted(AUDIO_FORMATS))
def test_a_tone_passes_and_the_picture_checks_say_they_do_not_apply(content_type):
    verdict, checks = evaluate(Candidate(tone(content_type), content_type))

    assert verdict.decision == "pass", verdict.reasons
    assert checks["decode"].status == "passed"
    assert checks["silence"].status == "passed"
    assert checks["silence"].score == pytest.approx(-13.5, abs=0.6)  # a 0.3 sine: RMS 0.212
    for name in ("finite", *PICTURE_CHECKS):
        assert (checks[name].status, checks[name].reason) == ("not_run", f"does not apply to audio ({content_type})")
    assert verdict.image_hash is None


@pytest.mark.parametrize("content_type", sorted(AUDIO_FORMATS))
def test_silent_audio_is_rejected_and_retried(content_type):
    verdict, checks = evaluate(Candidate(tone(content_type, amplitude=0.0), content_type))

    assert verdict.decision == "reject" and verdict.retryable
    assert verdict.reason_codes == ["silent"]
    assert checks["silence"].score == -150.0  # digital silence
    assert checks["silence"].reason.startswith("audio is silent or nearly so")


def test_quiet_audio_can_be_held_for_review_instead():
    policy = Policy.from_dict({"checks": {"silence": {"reject": -90, "review": -30}}})
    verdict, checks = evaluate(Candidate(tone("audio/flac", amplitude=0.01), "audio/flac"), policy)  # -43 dBFS
    assert verdict.decision == "review"
    assert checks["silence"].band == "review"

    verdict, checks = evaluate(Candidate(tone("audio/flac", amplitude=0.0), "audio/flac"),
                               Policy.from_dict({"checks": {"silence": "off"}}))
    assert verdict.passed and checks["silence"].reason == "off in this policy"


@pytest.mark.parametrize(("data", "content_type", "code"), [
    (tone("audio/flac", seconds=0.0), "audio/flac", "empty"),
    (b"", "audio/wav", "empty"),
    (tone("audio/mpeg")[:4000], "audio/mpeg", "undecodable"),  # cut: fewer seconds than the file declares
    (b"\x00" * 2000, "audio/ogg", "undecodable"),
], ids=["no samples", "no bytes", "truncated mp3", "zeros"])
def test_audio_that_is_empty_or_cut_fails_decode_without_retry(data, content_type, code):
    verdict, checks = evaluate(Candidate(data, content_type))

    assert verdict.decision == "reject" and not verdict.retryable
    assert verdict.reason_codes == [code]
    assert checks["silence"].reason == "skipped: decode rejected the audio"


# ---- 3D models, text, other files ------------------------------------------------------------------------------


def test_a_glb_passes_its_integrity_check():
    verdict, checks = evaluate(Candidate(glb(), "model/gltf-binary"))
    assert verdict.passed
    assert checks["decode"].status == "passed"
    for name in CHECK_NAMES[1:]:
        assert checks[name].reason == "does not apply to 3D models (model/gltf-binary)"


def _corrupt_json() -> bytes:
    data = bytearray(glb())
    data[20] = ord("[")  # the JSON chunk's opening brace
    data[21:23] = b"]]"
    return bytes(data)


@pytest.mark.parametrize(("data", "problem"), [
    (glb()[:-8], "the header declares"),
    (glb()[:4] + (1).to_bytes(4, "little") + glb()[8:], "glTF version is 1"),
    (_corrupt_json(), "the JSON chunk does not parse"),
    (glb({"scene": 0}), 'not a glTF document (no "asset")'),
    (b"glTF\x02\x00", "too short"),
], ids=["truncated", "version 1", "broken JSON", "no asset", "header only"])
def test_a_corrupt_glb_does_not_decode(data, problem):
    verdict, checks = evaluate(Candidate(data, "model/gltf-binary"))
    assert verdict.decision == "reject" and not verdict.retryable
    assert checks["decode"].code == "undecodable"
    assert problem in checks["decode"].reason


def test_text_must_be_non_empty_utf8():
    assert evaluate(Candidate("a red circle, 4 sides — ✓".encode(), "text/plain; charset=utf-8"))[0].passed
    _, checks = evaluate(Candidate(b"  \n", "text/plain"))
    assert (checks["decode"].code, checks["decode"].reason) == ("empty", "the text is only whitespace")
    _, checks = evaluate(Candidate(b"caf\xe9", "text/plain"))
    assert checks["decode"].code == "undecodable"
    assert "not UTF-8" in checks["decode"].reason
    assert checks["blank"].reason == "does not apply to text (text/plain)"


def test_other_files_need_only_bytes():
    verdict, checks = evaluate(Candidate(b"\x00\x01latent", "application/octet-stream"))
    assert verdict.passed
    assert checks["blank"].reason == "does not apply to other files (application/octet-stream)"
    verdict, checks = evaluate(Candidate(b"", "application/octet-stream"))
    assert verdict.reason_codes == ["empty"] and not verdict.retryable


# ---- mislabelled and unknown content -------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "content_type", "found"), [
    (encode(scene(32)), "video/mp4", "a PNG image"),
    (encode(scene(32)), "audio/flac", "a PNG image"),
    (video(moving_frames(3, 64)), "audio/mpeg", "an MP4/QuickTime file"),
    (video(moving_frames(3, 64), "webm"), "video/mp4", "a WebM/Matroska file"),
    (tone("audio/wav"), "image/png", "WAV audio"),
    (tone("audio/ogg"), "model/gltf-binary", "an Ogg stream"),
    (encode(scene(32)), "text/plain", "a PNG image"),
    (without_id3(tone("audio/mpeg")), "audio/wav", "MP3 audio"),  # no signature: ffmpeg's demuxer tells
], ids=["png as mp4", "png as flac", "mp4 as mp3", "webm as mp4", "wav as png", "ogg as glb", "png as text",
        "bare mp3 as wav"])
def test_data_that_is_not_its_declared_type_is_wrong_type(data, content_type, found):
    verdict, checks = evaluate(Candidate(data, content_type))
    assert verdict.decision == "reject" and not verdict.retryable
    assert checks["decode"].code == "wrong_type"
    assert checks["decode"].reason == f"content type is {content_type!r} but the data is {found}"


def test_an_unknown_content_type_is_wrong_type():
    verdict, checks = evaluate(Candidate(b"{}", "application/json"))
    assert verdict.reason_codes == ["wrong_type"] and not verdict.retryable
    assert checks["decode"].reason == "content type 'application/json' is not one the sentinel can judge"
    assert checks["blank"].reason == "does not apply to files of an unknown type (application/json)"


def test_media_kinds_by_content_type():
    assert [media_kind(t) for t in ("image/png", "IMAGE/GIF", "video/webm", "audio/mpeg", "audio/ogg",
                                    "model/gltf-binary", "text/plain; charset=utf-8", "application/octet-stream",
                                    "application/zip")] == [
        "image", "image", "video", "audio", "audio", "model", "text", "other", "unknown"]


def test_still_images_do_not_load_pyav():
    # PyAV loads ffmpeg's libraries: a worker that only makes images never pays for it.
    script = (
        "import io, sys\n"
        "from PIL import Image\n"
        "from comfygate.sentinel import Candidate, Policy, Sentinel\n"
        "buffer = io.BytesIO(); Image.new('RGB', (8, 8), 'red').save(buffer, 'PNG')\n"
        "Sentinel().evaluate(Candidate(buffer.getvalue(), 'image/png'), Policy.from_dict(None))\n"
        "print('av' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_still_image_with_pixels_keeps_its_finite_check():
    _, checks = evaluate(candidate(landscape(64)))
    assert checks["finite"].status == "passed"
    assert checks["silence"].reason == "does not apply to still images (image/png)"
    assert checks["blank"].reason is None  # one picture: no frame to name
