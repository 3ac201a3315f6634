"""The sealed recovery data: it restores the face with the right key, refuses any other, and costs at
most the two lowest bits of the pixels that carry it."""

import numpy as np
import pytest

from medeid.models.deid import payload
from medeid.passwords import derive_model_key

from tests.models.test_deid_align import photo

KEY, OTHER = derive_model_key("right").cipher_key, derive_model_key("wrong").cipher_key


def test_sealed_face_opens_with_its_key_only_and_is_deterministic():
    face = photo(96, 96)
    sealed, quality = payload.seal(face, KEY, max_bytes=20_000)
    assert quality == payload.QUALITIES[0]  # room to spare: the best quality
    assert sealed == payload.seal(face, KEY, max_bytes=20_000)[0]  # re-runs agree byte for byte
    assert sealed != payload.seal(face, OTHER, max_bytes=20_000)[0]
    restored = payload.unseal(sealed, KEY)
    assert restored.shape == face.shape
    assert np.abs(restored.astype(int) - face).mean() < 2.0
    with pytest.raises(payload.WrongPassword):
        payload.unseal(sealed, OTHER)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(payload.WrongPassword):
        payload.unseal(bytes(tampered), KEY)


def test_quality_drops_to_fit_and_too_small_a_carrier_is_a_clear_error():
    face = photo(96, 96, seed=1)
    best, _ = payload.seal(face, KEY, max_bytes=20_000)
    smaller, quality = payload.seal(face, KEY, max_bytes=len(best) - 1)
    assert quality < payload.QUALITIES[0] and len(smaller) < len(best)
    with pytest.raises(ValueError, match="too small to carry"):
        payload.seal(face, KEY, max_bytes=100)


def test_embedding_touches_only_the_low_bits_and_extracts_what_it_wrote():
    values = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)
    sealed = bytes(range(256)) * 3
    carried = payload.embed(values, sealed)
    assert payload.extract(carried) == sealed
    assert np.array_equal(carried >> payload.BITS, values >> payload.BITS)  # high bits untouched
    used = (len(sealed) + payload.HEADER.size) * 8 // payload.BITS
    assert (carried[:used] != values[:used]).mean() > 0.6  # the data really is in the low bits
    np.testing.assert_array_equal(carried[used:], values[used:])
    with pytest.raises(ValueError, match="do not fit"):
        payload.embed(values[:100], sealed)
    with pytest.raises(payload.NoRecoveryData):
        payload.extract(np.zeros(5000, np.uint8))
