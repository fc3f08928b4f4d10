"""Perceptual and exact hashes: copies up to encoding stay close, different pictures are far apart."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image
from sentinel_images import NATURAL, brightened, encode, flat, landscape, reencoded, shifted

from comfygate.sentinel import hamming, image_hash, perceptual_hash, phash_from_hex, phash_hex


@pytest.mark.parametrize("name", sorted(NATURAL))
def test_copies_up_to_encoding_are_close(name):
    image = NATURAL[name](256)
    original = perceptual_hash(image)
    assert hamming(original, perceptual_hash(image)) == 0
    assert hamming(original, perceptual_hash(reencoded(image))) <= 2
    assert hamming(original, perceptual_hash(brightened(image))) <= 2
    assert hamming(original, perceptual_hash(shifted(image))) <= 6
    assert hamming(original, perceptual_hash(image.resize((128, 128)))) <= 6  # same picture, smaller


def test_different_pictures_are_far_apart():
    hashes = {name: perceptual_hash(make(256)) for name, make in NATURAL.items()}
    distances = [hamming(hashes[a], hashes[b]) for a in hashes for b in hashes if a < b]
    assert min(distances) >= 16, distances
    assert hamming(perceptual_hash(landscape(256, seed=0)), perceptual_hash(landscape(256, seed=5))) >= 10


def test_hash_is_64_bits_and_stable_across_modes():
    image = landscape(128)
    value = perceptual_hash(image)
    assert 0 <= value < 1 << 64
    assert value.bit_count() == 32  # half of the 63 AC terms lie above their median (31), plus the DC term
    assert perceptual_hash(image.convert("L")) == perceptual_hash(image)
    assert perceptual_hash(Image.new("RGB", (8, 8), "red")) == perceptual_hash(Image.new("RGB", (8, 8), "red"))


def test_hex_form_round_trips():
    for value in (0, 1, (1 << 64) - 1, perceptual_hash(landscape(64))):
        text = phash_hex(value)
        assert len(text) == 16 and phash_from_hex(text) == value
    for bad in ("abc", "0x1234567890abcd", "zzzzzzzzzzzzzzzz"):
        with pytest.raises(ValueError, match="16 hex characters"):
            phash_from_hex(bad)
    with pytest.raises(ValueError, match="64-bit"):
        phash_hex(1 << 64)


def test_hamming_counts_differing_bits():
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(0, (1 << 64) - 1) == 64


def test_image_hash_pairs_the_file_digest_with_the_picture_hash():
    image = flat(16)
    data = encode(image)
    hashed = image_hash(data, image)
    assert hashed.sha256 == hashlib.sha256(data).hexdigest()
    assert hashed.phash == perceptual_hash(image)
