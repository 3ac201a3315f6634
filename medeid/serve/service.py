"""The Ray Serve application: MedSem-DeID behind a FastAPI ingress, with dynamic batching.

    serve run medeid.serve:app                                   # the demo preset's models
    serve run medeid.serve:app model_uri=s3://b/models/deid detector_uri=s3://b/models/detector
    serve deploy cluster/serve.yaml                              # replicas, autoscaling, GPUs

Endpoints (OpenAPI at /docs): `POST /v1/deidentify` and `POST /v1/recover` take the image as the raw
request body and answer with the image in the same format. With `X-Medeid-Recovery: separate` the
faces' recovery data is kept out of the image: the answer is JSON, `{"image", "recovery_data"}` in
base64, and `/v1/recover` takes the same JSON back (`none` keeps no recovery data at all; `embedded`,
the default, seals it into the image). `GET /healthz` (the process answers) and
`GET /readyz` (the model is loaded and warmed up). Passwords travel in headers, never in the URL, so
no access log holds them. Concurrent de-identification requests are gathered by `@serve.batch` into
one forward pass; `user_config` (`max_batch_size`, `batch_wait_timeout_s`) changes that without a
restart.
"""

# No `from __future__ import annotations`: FastAPI resolves the endpoints' annotations at run time.
import asyncio
import base64
import dataclasses

import numpy as np
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from medeid.config import ServeConfig, StorageConfig, load_config
from medeid.serve.engine import Engine, Job, ServeError

DEPLOYMENT = "MedSemDeID"
DEFAULTS = ServeConfig()  # batching until `reconfigure` applies the deployment's user_config
PASSWORD_HEADER, RECORD_ID_HEADER = "X-Medeid-Password", "X-Medeid-Record-Id"
FACES_HEADER, MODEL_HEADER, BATCH_HEADER = "X-Medeid-Faces", "X-Medeid-Model", "X-Medeid-Batch"
RECOVERY_HEADER = "X-Medeid-Recovery"
IMAGE_BODY = {"requestBody": {"required": True, "description": "the image file's bytes (JPEG, PNG, TIFF or DICOM)",
                              "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                          for t in ("image/jpeg", "image/png", "image/tiff", "application/dicom")}}}
SEPARATE_JSON = {"schema": {"type": "object", "properties": {
    "image": {"type": "string", "format": "byte", "description": "the image file, base64"},
    "recovery_data": {"type": "string", "format": "byte", "description": "its faces' sealed originals, base64"}}}}
IMAGE_ANSWER = {200: {"description": "the image, in the format it came in; with X-Medeid-Recovery: separate, "
                                     "JSON holding it and its recovery data apart",
                      "content": {"image/jpeg": {}, "image/png": {}, "image/tiff": {}, "application/dicom": {},
                                  "application/json": SEPARATE_JSON}}}
RECOVER_BODY = {"requestBody": {"required": True, "description": "the anonymized file's bytes, or JSON with the file "
                                "and the recovery data kept apart from it",
                                "content": {**IMAGE_BODY["requestBody"]["content"], "application/json": SEPARATE_JSON}}}

api = FastAPI(title="medeid", version="1",
              description="Face de-identification that keeps the medical signs, reversible with a password.")


@api.exception_handler(ServeError)
async def _serve_error(request: Request, error: ServeError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    # FastAPI's own answer echoes the offending input, which may be a header holding a password.
    where = sorted({".".join(str(part) for part in e.get("loc", ())) for e in error.errors()})
    return JSONResponse(ServeError(422, "invalid_request", f"invalid: {', '.join(where)}").body(), status_code=422)


async def read_body(request: Request, engine: Engine) -> bytes:
    """The request body, refused with a 413 as soon as it is known to be too large (from
    Content-Length, or while it streams in): Serve itself sets no limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        engine.check_body(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        engine.check_body(size)
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name=DEPLOYMENT, health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress(api)
class DeidService:
    """One replica: the models loaded once from their URIs, warmed up, then serving."""

    def __init__(self, config: dict, storage_config: dict | None = None):
        import torch

        cfg = ServeConfig(**config)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.engine = Engine.from_config(cfg, StorageConfig(**(storage_config or {})).settings())
        self.model = self.engine.model
        # One forward pass before the first request, so that it does not pay for lazy initialisation.
        crops = np.zeros((1, self.model.resolution, self.model.resolution, 3), np.uint8)
        from medeid.passwords import derive_model_key

        self.model.deidentify_crops(crops, [derive_model_key("mdk1-" + "0" * 64, self.model.net.config.key_dim)])
        self.batching = {"max_batch_size": DEFAULTS.max_batch_size,
                         "batch_wait_timeout_s": DEFAULTS.batch_wait_timeout_s}
        self.ready = True

    def reconfigure(self, user_config: dict) -> None:
        """Batching settings from the deployment's `user_config`, applied without a restart."""
        self.batching = {"max_batch_size": int(user_config.get("max_batch_size", DEFAULTS.max_batch_size)),
                         "batch_wait_timeout_s": float(user_config.get("batch_wait_timeout_s",
                                                                       DEFAULTS.batch_wait_timeout_s))}
        self.deidentify_batch.set_max_batch_size(self.batching["max_batch_size"])
        self.deidentify_batch.set_batch_wait_timeout_s(self.batching["batch_wait_timeout_s"])

    def check_health(self) -> None:
        if not self.ready:
            raise RuntimeError("the model is not loaded")

    @serve.batch(max_batch_size=DEFAULTS.max_batch_size, batch_wait_timeout_s=DEFAULTS.batch_wait_timeout_s)
    async def deidentify_batch(self, jobs: list[Job]) -> list[tuple]:
        # In a thread: the event loop keeps taking requests in while the batch runs.
        answers = await asyncio.to_thread(self.engine.deidentify, jobs)
        return [(answer, len(jobs)) for answer in answers]

    @api.post("/v1/deidentify", responses=IMAGE_ANSWER, openapi_extra=IMAGE_BODY,
              summary="Replace every face's identity; the medical signs stay")
    async def deidentify(self, request: Request,
                         x_medeid_password: str | None = Header(None, description="the password that restores it"),
                         x_medeid_record_id: str | None = Header(None, description="or: a record id; the password "
                                                                 "is derived from it and the server's secret"),
                         x_medeid_recovery: str | None = Header(None, description="embedded (default): recovery "
                                                                "data sealed into the image; separate: returned "
                                                                "apart from it (JSON); none: not kept")):
        password = self.engine.password(x_medeid_password, x_medeid_record_id)
        recovery = self.engine.recovery_mode(x_medeid_recovery)
        body = await read_body(request, self.engine)
        answer, batch = await self.deidentify_batch(Job(password, body, recovery))
        if isinstance(answer, ServeError):
            raise answer
        headers = {FACES_HEADER: str(answer.faces), MODEL_HEADER: self.model.version, BATCH_HEADER: str(batch),
                   RECOVERY_HEADER: recovery}
        if answer.recovery_data is None:
            return Response(answer.data, media_type=answer.media_type, headers=headers)
        return JSONResponse({"image": base64.b64encode(answer.data).decode(), "media_type": answer.media_type,
                             "faces": answer.faces, "recovery_data": base64.b64encode(answer.recovery_data).decode()},
                            headers=headers)

    @api.post("/v1/recover", responses=IMAGE_ANSWER, openapi_extra=RECOVER_BODY,
              summary="Restore the original faces (needs the server's bearer token and the password)")
    async def recover(self, request: Request, authorization: str | None = Header(None),
                      x_medeid_password: str | None = Header(None), x_medeid_record_id: str | None = Header(None)):
        self.engine.authorize(authorization)  # before the body is read
        password = self.engine.password(x_medeid_password, x_medeid_record_id)
        image, recovery_data = self.engine.recovery_request(request.headers.get("content-type"),
                                                            await read_body(request, self.engine))
        answer = await asyncio.to_thread(self.engine.recover, password, image, recovery_data)
        return Response(answer.data, media_type=answer.media_type, headers={MODEL_HEADER: self.model.version})

    @api.get("/healthz", summary="The replica answers")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz(self) -> JSONResponse:
        return JSONResponse({"ready": self.ready, "model": self.model.version, **self.batching,
                             "record_ids": self.engine.secret is not None, "recovery": self.engine.token is not None},
                            status_code=200 if self.ready else 503)


class AppArgs(BaseModel):
    """`serve run medeid.serve:app key=value ...` (or `args:` in a serve config file). Paths of the
    secret files, never secrets."""

    config: str = "demo"  # a preset or a YAML path; its `serve` and `storage` sections apply
    model_uri: str | None = None
    detector_uri: str | None = None
    max_batch_size: int | None = None
    batch_wait_timeout_s: float | None = None
    secret_file: str | None = None
    token_file: str | None = None


def app(args: AppArgs) -> Application:
    """The application builder: config and overrides in, the bound deployment out (no I/O here:
    replicas load the models)."""
    overrides = {f"serve.{name}": value for name, value in args.model_dump().items() if name != "config"}
    config = load_config(args.config, overrides)
    cfg = config.serve
    if not cfg.model_uri or not cfg.detector_uri:
        raise ValueError("no model to serve: give model_uri=... and detector_uri=... (or a config whose serve "
                         "section names them)")
    return DeidService.options(
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        user_config={"max_batch_size": cfg.max_batch_size, "batch_wait_timeout_s": cfg.batch_wait_timeout_s},
    ).bind(dataclasses.asdict(cfg), dataclasses.asdict(config.storage))
