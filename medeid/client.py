"""A small client for the serving endpoint (`medeid.serve`).

    client = Client("http://127.0.0.1:8000", token=Secret.from_file("recovery.token"))
    anonymized = client.deidentify(photo_bytes, password="per-photo password")   # -> Deidentified
    original = client.recover(anonymized.data, password="per-photo password")
    anonymized = client.deidentify(photo_bytes, record_id="MRN-0042/visit-3")     # server-derived password
    shared = client.deidentify(photo_bytes, password="pw", recovery="separate")    # .recovery_data kept apart
    original = client.recover(shared.data, password="pw", recovery_data=shared.recovery_data)

Errors come back as `ServiceError` with the HTTP status and the server's error code; passwords and
the token are never part of one (nor of this object's repr).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import quote

import requests

from medeid.passwords import Secret

PASSWORD_HEADER, RECORD_ID_HEADER, RECOVERY_HEADER = "X-Medeid-Password", "X-Medeid-Record-Id", "X-Medeid-Recovery"


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Deidentified:
    data: bytes  # the anonymized file, in the format sent
    media_type: str
    faces: int
    model: str  # the model version that made it
    batch: int  # how many requests shared its forward pass
    recovery_data: bytes | None = None  # recovery "separate": the faces' sealed originals, kept apart from `data`


class Client:
    """Calls one medeid endpoint over a kept-alive HTTP session (one per thread, like `requests`'s)."""

    def __init__(self, url: str, token: Secret | str | None = None, timeout_s: float = 60.0):
        self.url = url.rstrip("/")
        self._token = token if token is None or isinstance(token, Secret) else Secret(token)
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def deidentify(self, data: bytes, *, password: Secret | str | None = None, record_id: str | None = None,
                   recovery: str = "embedded") -> Deidentified:
        """`recovery`: where the faces' recovery data goes: `embedded` in the file, `separate` (returned
        in `Deidentified.recovery_data`, never inside the file), or `none`."""
        response = self._post("/v1/deidentify", data, {**_identity(password, record_id), RECOVERY_HEADER: recovery})
        image, media_type, recovery_data = response.content, response.headers.get("Content-Type", ""), None
        if media_type.startswith("application/json"):
            fields = response.json()
            image, media_type = base64.b64decode(fields["image"]), fields["media_type"]
            recovery_data = base64.b64decode(fields["recovery_data"])
        return Deidentified(image, media_type, int(response.headers.get("X-Medeid-Faces", 0)),
                            response.headers.get("X-Medeid-Model", ""), int(response.headers.get("X-Medeid-Batch", 1)),
                            recovery_data)

    def recover(self, data: bytes, *, password: Secret | str | None = None, record_id: str | None = None,
                recovery_data: bytes | None = None) -> bytes:
        """The original faces; `recovery_data` for a file de-identified with recovery `separate`."""
        headers = _identity(password, record_id)
        if self._token is not None:
            headers["Authorization"] = "Bearer " + self._token.reveal().decode()
        if recovery_data is None:
            return self._post("/v1/recover", data, headers).content
        body = {"image": base64.b64encode(data).decode(), "recovery_data": base64.b64encode(recovery_data).decode()}
        return self._post("/v1/recover", body, headers).content

    def ready(self) -> dict:
        response = self.session.get(self.url + "/readyz", timeout=self.timeout_s)
        _raise_for(response)
        return response.json()

    def _post(self, path: str, data: bytes | dict, headers: dict[str, str]) -> requests.Response:
        if isinstance(data, dict):  # a JSON body (requests sets its Content-Type)
            response = self.session.post(self.url + path, json=data, timeout=self.timeout_s, headers=headers)
        else:
            response = self.session.post(self.url + path, data=data, timeout=self.timeout_s,
                                         headers={"Content-Type": "application/octet-stream", **headers})
        _raise_for(response)
        return response


def _identity(password: Secret | str | None, record_id: str | None) -> dict[str, str]:
    """The identity headers, percent-encoded UTF-8 (HTTP header values are Latin-1 only)."""
    if password is not None:
        return {PASSWORD_HEADER: quote(password.reveal() if isinstance(password, Secret) else password, safe="")}
    if record_id is not None:
        return {RECORD_ID_HEADER: quote(record_id, safe="")}
    return {}


def _raise_for(response: requests.Response) -> None:
    if response.ok:
        return
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.reason or ""
    raise ServiceError(response.status_code, code, message)
