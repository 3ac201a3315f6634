import numpy as np
import pytest
import torch

from medeid.pixels import to_signed, to_uint8


def test_pixels_round_trip_exactly_and_span_the_signed_range():
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    images[0, 0, 0] = (0, 255, 128)
    signed = to_signed(images)
    assert signed.shape == (2, 3, 5, 7) and signed.dtype == torch.float32
    assert signed[0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    assert torch.equal(signed, to_signed(torch.from_numpy(images)))  # numpy and torch read alike
    np.testing.assert_array_equal(to_uint8(signed), images)
    assert to_uint8(torch.full((1, 3, 2, 2), 3.0)).max() == 255  # out of range clips, never wraps
