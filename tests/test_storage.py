"""Storage: URIs, settings from the environment, real round trips, and clear failures."""

import time

import pytest

from medeid import storage
from medeid.devstack import free_port
from medeid.storage import S3Settings, StorageError


def test_uris():
    assert storage.split_s3("s3://bucket/a/b/") == ("bucket", "a/b")
    assert storage.join("s3://bucket/a/", "/b", "c.png") == "s3://bucket/a/b/c.png"
    assert storage.relative_key("s3://bucket/a", "s3://bucket/a/b/c.png") == "b/c.png"
    with pytest.raises(ValueError):
        storage.split_s3("s3:///key")
    with pytest.raises(ValueError):
        storage.relative_key("s3://bucket/a", "s3://bucket/other/c.png")


def test_settings_come_from_the_standard_variables_and_hide_credentials():
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "eu-west-1",
           "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "very-secret-value"}
    settings = S3Settings.from_env(env)
    assert (settings.endpoint_url, settings.region) == ("http://127.0.0.1:9", "eu-west-1")
    assert settings.secret_access_key == "very-secret-value"
    assert "very-secret-value" not in repr(settings) and "AKIDEXAMPLE" not in repr(settings)
    # A config's endpoint wins over the environment; unset overrides do not.
    assert S3Settings.from_env(env, endpoint_url="http://10.0.0.1:1", region=None).endpoint_url == "http://10.0.0.1:1"
    assert S3Settings.from_env({**env, "AWS_ENDPOINT_URL_S3": "http://s3.local:1"}).endpoint_url == "http://s3.local:1"


@pytest.mark.parametrize("where", ["s3", "local"])
def test_round_trip(where, bucket, tmp_path):
    root = f"{bucket}/data" if where == "s3" else str(tmp_path / "data")
    storage.write_bytes(storage.join(root, "p1/a.bin"), b"alpha")
    storage.write_bytes(storage.join(root, "p2/b.bin"), b"beta")
    assert storage.read_bytes(storage.join(root, "p1/a.bin")) == b"alpha"
    assert storage.list_files(root) == [storage.join(root, "p1/a.bin"), storage.join(root, "p2/b.bin")]
    assert storage.exists(storage.join(root, "p2/b.bin")) and not storage.exists(storage.join(root, "nope"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "nope"))
    copy = str(tmp_path / "copy") if where == "s3" else f"{bucket}/copy"
    assert storage.copy_tree(root, copy) == 2
    assert storage.read_bytes(storage.join(copy, "p2/b.bin")) == b"beta"


def test_unreachable_endpoint_fails_fast_naming_it(s3):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = S3Settings.from_env(s3.env, endpoint_url=dead)
    started = time.monotonic()
    with pytest.raises(StorageError) as error:
        storage.check_reachable("s3://anything/x", settings)
    assert time.monotonic() - started < 30
    assert dead in str(error.value)
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in str(error.value)
    with pytest.raises(StorageError, match=dead):
        storage.read_bytes("s3://anything/x", settings)


def test_missing_bucket_and_malformed_endpoint_are_explained(s3):
    with pytest.raises(StorageError, match=s3.endpoint_url):
        storage.check_reachable("s3://no-such-bucket-here/x", s3.settings)
    with pytest.raises(StorageError, match="http://host:port"):
        storage.filesystem("s3://b/x", S3Settings(endpoint_url="127.0.0.1:9000"))


def test_a_node_copy_follows_what_is_under_its_uri(bucket, tmp_path, monkeypatch):
    """A model written again under the same URI (a re-trained demo model) is fetched again."""
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    model = f"{bucket}/models/medical"
    storage.write_bytes(f"{model}/model.bin", b"first")
    first = storage.local_copy(model)
    assert (first / "model.bin").read_bytes() == b"first" and storage.local_copy(model) == first  # once
    storage.write_bytes(f"{model}/model.bin", b"second")
    second = storage.local_copy(model)
    assert second != first and (second / "model.bin").read_bytes() == b"second"
    time.sleep(1.1)  # S3 keeps modification times in whole seconds
    storage.write_bytes(f"{model}/model.bin", b"thirds")  # the same size as before
    assert (storage.local_copy(model) / "model.bin").read_bytes() == b"thirds"
    with pytest.raises(FileNotFoundError, match="nothing under"):
        storage.local_copy(f"{bucket}/models/missing")


class FlakyProxy:
    """An HTTP proxy in front of the S3 server that answers each distinct request with 503 SlowDown
    the first time (S3's own "back off" answer), then forwards it: transient errors on real HTTP."""

    def __init__(self, target: str):
        import http.client
        import http.server
        import threading
        from urllib.parse import urlsplit

        proxy, target_netloc = self, urlsplit(target).netloc
        self.failed, self.forwarded, seen = 0, 0, set()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self._body()
                if (self.command, self.path) not in seen:
                    seen.add((self.command, self.path))
                    proxy.failed += 1
                    reply = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    return
                proxy.forwarded += 1
                upstream = http.client.HTTPConnection(target_netloc, timeout=30)
                upstream.request(self.command, self.path, body, dict(self.headers))
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                # A HEAD answer has no body but tells the object's length.
                self.send_header("Content-Length", answer.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            def _body(self) -> bytes:
                if "chunked" not in (self.headers.get("Transfer-Encoding") or ""):
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b""):  # trailers
                    pass
                del self.headers["Transfer-Encoding"]
                self.headers["Content-Length"] = str(len(body))
                return body

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_transient_s3_errors_are_retried_with_back_off(s3, bucket):
    proxy = FlakyProxy(s3.endpoint_url)
    try:
        settings = S3Settings.from_env(s3.env, endpoint_url=proxy.url)
        root = f"{bucket}/flaky"
        storage.write_bytes(f"{root}/a.bin", b"alpha", settings)  # boto3
        assert storage.read_bytes(f"{root}/a.bin", settings) == b"alpha"  # pyarrow's S3 filesystem
        assert storage.list_sized(root, settings) == [("a.bin", 5)]
        assert proxy.failed >= 3 and proxy.forwarded >= 3  # every call met a 503 first, and went through
        without_retries = S3Settings.from_env(s3.env, endpoint_url=proxy.url, max_attempts=1)
        with pytest.raises((StorageError, OSError)):
            storage.write_bytes(f"{root}/b.bin", b"beta", without_retries)
    finally:
        proxy.close()
