"""The local stack starts, serves, and stops cleanly, also when the work inside fails."""

import socket

import pytest

from medeid import storage
from medeid.devstack import LocalS3


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_local_s3_stops_even_when_the_block_fails():
    with pytest.raises(RuntimeError, match="boom"):
        with LocalS3() as server:
            storage.make_bucket("s3://stack-test", server.settings)
            storage.write_bytes("s3://stack-test/a", b"x", server.settings)
            assert _listening(server.port)
            raise RuntimeError("boom")
    assert not _listening(server.port)
    assert server._process.poll() is not None
