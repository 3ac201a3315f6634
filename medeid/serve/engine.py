"""What the serving endpoint does with a request, without Ray or HTTP: a replica's models, its
secrets, and the answer (or the error) for each request.

    engine = Engine.from_config(config.serve, settings)
    password = engine.password(password_header, record_id_header)
    answers = engine.deidentify([Job(password, body, engine.recovery_mode(header)), ...])  # one batched pass
    engine.authorize(authorization_header)                       # before reading a recovery body
    image, recovery_data = engine.recovery_request(content_type, body)
    answer = engine.recover(password, image, recovery_data)

Files go through the archive job's anonymizer (`medeid.archive.anonymize`): same formats, same
metadata stripping, same fail-closed rules, same seals, so a photo anonymized here under record id
K and the server secret S restores like the archive's file K under archive secret S. The caller
chooses where the seals go (`medeid.archive.recovery`): `embedded` in the file (the default: the
caller keeps the file), `separate` (handed back apart from the image, as the archive job's store
holds them: `Answer.recovery_data`, the packed seals), or `none`. Every failure
is a `ServeError` carrying an HTTP status and a short code; nothing in one holds a password, a token
or the server secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import struct
import time
from dataclasses import dataclass
from urllib.parse import unquote

from medeid import storage
from medeid.archive import carrier, formats
from medeid.archive.anonymize import BORDERLINE_FACE, NO_FACE_FOUND, FileAnonymizer, FileOutcome, recover_file
from medeid.archive.manifest import QUARANTINED
from medeid.archive.recovery import EMBEDDED, MODES, SEPARATE
from medeid.config import ServeConfig
from medeid.models.deid.api import RECOVERED, WRONG_PASSWORD
from medeid.passwords import Secret, image_password

logger = logging.getLogger("ray.serve")  # Serve writes this logger to the replica's log file

SECRET_VARIABLE, TOKEN_VARIABLE = "MEDEID_SERVE_SECRET", "MEDEID_SERVE_TOKEN"
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "tiff": "image/tiff", formats.DICOM: "application/dicom"}
# A rejected upload's kind -> (HTTP status, error code).
REJECTIONS = {
    formats.EMPTY: (400, "empty_body"),
    formats.NOT_AN_IMAGE: (415, "not_an_image"),
    formats.UNSUPPORTED: (415, "unsupported_image"),
    formats.TOO_LARGE: (413, "image_too_large"),
    formats.CORRUPT: (422, "corrupt_image"),
    NO_FACE_FOUND: (422, "no_face"),
    BORDERLINE_FACE: (422, "borderline_face"),
}


class ServeError(Exception):
    """An answer that is not an image: `status` (HTTP), `code` (stable, for programs), `message`
    (for people). Built from fixed texts and file facts only, never from a password or token."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class Job:
    password: Secret
    data: bytes
    recovery: str = EMBEDDED  # where the seals go: embedded | separate | none


@dataclass(frozen=True)
class Answer:
    data: bytes
    media_type: str
    faces: int = 0
    recovery_data: bytes | None = None  # `separate` mode: the packed seals, never inside `data`


def read_secret(path: str | None, variable: str) -> Secret | None:
    """A secret from the file at `path`, else from the environment variable, else None."""
    if path:
        return Secret.from_file(path)
    value = os.environ.get(variable)
    return Secret(value) if value else None


def media_type(data: bytes) -> str:
    return MEDIA_TYPES.get(formats.sniff(data), "application/octet-stream")


class Engine:
    """One replica's models and secrets. Thread-safe for one batch at a time (the app's batcher)."""

    def __init__(self, anonymizer: FileAnonymizer, config: ServeConfig, secret: Secret | None, token: Secret | None):
        if anonymizer.secret is not None:
            raise ValueError("the serving anonymizer takes each request's password, not an archive secret")
        if config.max_ongoing_requests < config.max_batch_size:
            raise ValueError(f"max_ongoing_requests ({config.max_ongoing_requests}) < max_batch_size "
                             f"({config.max_batch_size}): batches could never fill")
        self.anonymizer, self.model, self.config = anonymizer, anonymizer.model, config
        self.secret, self.token = secret, token

    @classmethod
    def from_config(cls, config: ServeConfig, settings: storage.S3Settings | None = None) -> "Engine":
        if not config.model_uri or not config.detector_uri:
            raise ValueError("the serving config names no model: set serve.model_uri and serve.detector_uri "
                             "(serve run medeid.serve:app model_uri=... detector_uri=...)")
        anonymizer = FileAnonymizer.from_uris(config.model_uri, config.detector_uri, None, settings,
                                              device="cuda" if config.num_gpus > 0 else "cpu",
                                              pass_faceless=config.pass_faceless, max_pixels=config.max_pixels,
                                              surround=config.surround)
        return cls(anonymizer, config, read_secret(config.secret_file, SECRET_VARIABLE),
                   read_secret(config.token_file, TOKEN_VARIABLE))

    # -- requests -------------------------------------------------------------------------------

    def password(self, password: str | None, record_id: str | None) -> Secret:
        """The request's password: the caller's own, or the one the server secret gives its record id.
        Both arrive percent-encoded (UTF-8), as header values must be Latin-1."""
        password, record_id = (unquote(v) if v else v for v in (password, record_id))
        if bool(password) == bool(record_id):
            raise ServeError(400, "password_required", "give exactly one of the X-Medeid-Password and "
                                                       "X-Medeid-Record-Id headers")
        if password:
            return Secret(password)
        if self.secret is None:
            raise ServeError(400, "record_ids_off", "this server has no secret to derive passwords from "
                                                    "record ids: give X-Medeid-Password")
        return image_password(self.secret, record_id)

    def authorize(self, authorization: str | None) -> None:
        """Recovery needs the configured bearer token: 401 without one, 403 with a wrong one."""
        if self.token is None:
            raise ServeError(403, "recovery_off", "recovery is not enabled on this server (no token configured)")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ServeError(401, "token_required", "recovery needs 'Authorization: Bearer <token>'",
                             {"WWW-Authenticate": 'Bearer realm="medeid"'})
        if not hmac.compare_digest(given.strip().encode(), self.token.reveal()):
            raise ServeError(403, "token_rejected", "the bearer token is not this server's")

    @staticmethod
    def recovery_mode(header: str | None) -> str:
        """The request's recovery mode: `embedded` unless the X-Medeid-Recovery header names another."""
        mode = (header or EMBEDDED).strip().lower()
        if mode not in MODES:
            raise ServeError(400, "invalid_recovery", f"X-Medeid-Recovery must be one of {', '.join(MODES)}")
        return mode

    @staticmethod
    def recovery_request(content_type: str | None, body: bytes) -> tuple[bytes, bytes | None]:
        """A recovery body: the raw image (its seals inside it), or JSON `{"image": base64,
        "recovery_data": base64}` for a file whose seals were kept apart (`separate`)."""
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            return body, None
        try:
            fields = json.loads(body)
            return base64.b64decode(fields["image"], validate=True), base64.b64decode(fields["recovery_data"],
                                                                                      validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ServeError(400, "invalid_recovery_request", 'a JSON recovery body is {"image": base64, '
                                                              '"recovery_data": base64}') from None

    def check_body(self, size: int) -> None:
        if size > self.config.max_body_bytes:
            raise ServeError(413, "body_too_large", f"the body exceeds {self.config.max_body_bytes:,} bytes")

    # -- work -----------------------------------------------------------------------------------

    def deidentify(self, jobs: list[Job]) -> list[Answer | ServeError]:
        """Each job's anonymized file, or its error, with one batched pass of the network. A batch that
        fails is retried one job at a time, so one bad request fails alone (a 500 for it only)."""
        started = time.perf_counter()
        try:
            outcomes = self.anonymizer.anonymize([job.password for job in jobs], [job.data for job in jobs],
                                                 [job.recovery for job in jobs])
        except Exception:
            if len(jobs) == 1:
                logger.exception("de-identification failed (%d bytes)", len(jobs[0].data))
                return [ServeError(500, "model_failed", "the model failed on this image; the server logged why")]
            return [self.deidentify([job])[0] for job in jobs]
        logger.debug("de-identified a batch of %d in %.0f ms", len(jobs), 1000 * (time.perf_counter() - started))
        return [self._answer(outcome) for outcome in outcomes]

    @staticmethod
    def _answer(outcome: FileOutcome) -> Answer | ServeError:
        if outcome.status == QUARANTINED:
            status, code = REJECTIONS.get(outcome.problem, (422, "not_anonymized"))
            return ServeError(status, code, outcome.reason or code)
        kept_apart = carrier.pack(list(outcome.seals)) if outcome.recovery == SEPARATE else None
        return Answer(outcome.output, media_type(outcome.output), outcome.faces, kept_apart)

    def recover(self, password: Secret, data: bytes, recovery_data: bytes | None = None) -> Answer:
        """The original faces of a file this server (or the archive job) anonymized, from the seals
        it carries or, when given, from `recovery_data` (the packed seals kept apart from it)."""
        try:
            seals = None if recovery_data is None else carrier.unpack(recovery_data)
        except struct.error:
            raise ServeError(400, "invalid_recovery_data", "the recovery data is not medeid's packed seals") from None
        try:
            restored, status = recover_file(self.model, password, data, seals)
        except formats.Rejected as rejected:
            status_code, code = REJECTIONS.get(rejected.kind, (422, "corrupt_image"))
            raise ServeError(status_code, code, rejected.reason) from None
        except ValueError as error:  # seals that do not fit the pixels: resized or another photo
            raise ServeError(422, "recovery_mismatch", str(error)) from None
        if status == WRONG_PASSWORD:
            raise ServeError(422, "wrong_password", "the recovery data does not open with this password")
        if status != RECOVERED:
            raise ServeError(422, "no_recovery_data", "this file carries no medeid recovery data (one "
                                                      "de-identified with recovery 'separate' needs it sent beside it)")
        return Answer(restored, media_type(restored))
