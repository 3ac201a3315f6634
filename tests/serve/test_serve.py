"""The serving endpoint on the session's local Ray, called over real HTTP on 127.0.0.1.

One app for the module (`serve run`'s builder, a config file of its own, secret files): photos of
every form round-trip through /v1/deidentify and /v1/recover, with the recovery data sealed in or,
when the caller asks, handed back apart from the image (nothing of it in the file); recovery needs
the token; bad bodies
get their 4xx with a JSON error; concurrent requests are batched and each gets its own answer; the
batch size changes without a restart; no password, token or secret reaches a Ray log.
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image
from skimage.metrics import structural_similarity

from medeid.archive import carrier
from medeid.archive.anonymize import Decoded, recover_file
from medeid.archive.formats import sniff
from medeid.archive.manifest import ANONYMIZED, latest, read_manifest
from medeid.client import Client, ServiceError
from medeid.devstack import free_port
from medeid.models.deid.api import MedSemDeID
from medeid.passwords import Secret, image_password
from medeid.pipelines.anonymize import AnonymizeFiles, ArchiveLayout
from medeid.serve import AppArgs, app
from medeid.serve.check import check_endpoint
from medeid.synth.hospital_files import FORMS, encoded, hospital_files, trouble_files
from tests.archive.seal_checks import seal_traces
from tests.models.test_deid_api import psnr
from tests.pipelines.test_anonymize_archive import face_region

SERVER_SECRET, TOKEN = "the clinic's serving secret, kept in a file", "recovery-token-3f9c1e"
PASSWORDS = [f"patient password {i} é" for i in range(40)]  # non-ASCII too: headers are percent-encoded
MAX_BODY = 1_500_000


@pytest.fixture(scope="module")
def photos():
    """Patient photos in every form (JPEG with EXIF, rotated, PNG, grey, 16-bit, CMYK, TIFF, DICOM...)."""
    return [f for f in hospital_files(40, seed=21) if f.expected == "anonymized"]


@pytest.fixture(scope="module")
def endpoint(ray_session, small_models, tmp_path_factory):
    from ray import serve

    root = tmp_path_factory.mktemp("serve")
    (root / "secret").write_text(SERVER_SECRET + "\n")
    (root / "token").write_text(TOKEN + "\n")
    config = root / "serve.yaml"  # a config file of its own: the limit small enough to test cheaply
    config.write_text(yaml.safe_dump({"serve": {"max_body_bytes": MAX_BODY, "num_cpus": 0.5}}))
    args = AppArgs(config=str(config), model_uri=small_models[0], detector_uri=small_models[1],
                   secret_file=str(root / "secret"), token_file=str(root / "token"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app(args), name="medeid", route_prefix="/")
    try:
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "args": args,
               "model": MedSemDeID.from_uri(small_models[0])}
    finally:
        serve.shutdown()


def pixels(data: bytes) -> np.ndarray:
    return Decoded.of(data).rgb


def assert_restored(original: bytes, anonymized: bytes, restored: bytes, what: str) -> None:
    """The face was replaced, and the restored face meets the DESIGN §3 recovery bars."""
    before, after, back = pixels(original), pixels(anonymized), pixels(restored)
    box = face_region(before, after)
    assert box[0].stop - box[0].start >= 32 and psnr(before[box], after[box]) < 30, what
    a, b = before[box], back[box]
    assert psnr(a, b) >= 30 and structural_similarity(a, b, channel_axis=-1, data_range=255) >= 0.95, what


def test_the_endpoint_is_ready_and_documents_its_api(endpoint):
    assert requests.get(endpoint["url"] + "/healthz", timeout=10).json() == {"status": "ok"}
    ready = Client(endpoint["url"]).ready()
    assert ready["ready"] and ready["model"] == endpoint["model"].version
    assert ready["record_ids"] and ready["recovery"] and ready["max_batch_size"] == 16
    schema = requests.get(endpoint["url"] + "/openapi.json", timeout=10).json()
    assert {"/v1/deidentify", "/v1/recover", "/healthz", "/readyz"} <= set(schema["paths"])
    parameters = {p["name"].lower() for p in schema["paths"]["/v1/deidentify"]["post"]["parameters"]}
    assert {"x-medeid-password", "x-medeid-record-id"} <= parameters


def test_every_form_round_trips_with_a_password(endpoint, photos):
    client = Client(endpoint["url"], token=Secret(TOKEN))
    for n, form in enumerate(FORMS):
        original = photos[n]  # hospital_files cycles through the forms
        anonymized = client.deidentify(original.data, password=PASSWORDS[n])
        assert anonymized.faces >= 1 and anonymized.model == endpoint["model"].version
        assert sniff(anonymized.data) == sniff(original.data), form  # the format it came in
        restored = client.recover(anonymized.data, password=PASSWORDS[n])
        assert sniff(restored) == sniff(original.data), form
        assert_restored(original.data, anonymized.data, restored, form)
        with pytest.raises(ServiceError) as wrong:
            client.recover(anonymized.data, password=PASSWORDS[n + 1])
        assert (wrong.value.status, wrong.value.code) == (422, "wrong_password")


def test_separate_hands_the_recovery_data_back_apart_and_none_keeps_nothing(endpoint, photos):
    client = Client(endpoint["url"], token=Secret(TOKEN))
    for n, form in enumerate(FORMS):
        original = photos[n]
        shared = client.deidentify(original.data, password=PASSWORDS[n], recovery="separate")
        assert shared.faces >= 1 and sniff(shared.data) == sniff(original.data), form
        assert shared.media_type.startswith("image/") or shared.media_type == "application/dicom"
        assert seal_traces(shared.data, carrier.unpack(shared.recovery_data)) == [], form
        restored = client.recover(shared.data, password=PASSWORDS[n], recovery_data=shared.recovery_data)
        assert_restored(original.data, shared.data, restored, form)
        with pytest.raises(ServiceError) as bare:
            client.recover(shared.data, password=PASSWORDS[n])  # the file alone restores nothing
        assert (bare.value.status, bare.value.code) == (422, "no_recovery_data")
    gone = client.deidentify(photos[0].data, password=PASSWORDS[0], recovery="none")
    assert gone.recovery_data is None and gone.faces >= 1 and seal_traces(gone.data) == []
    unknown = requests.post(endpoint["url"] + "/v1/deidentify", data=photos[0].data, timeout=30,
                            headers={"X-Medeid-Password": "pw", "X-Medeid-Recovery": "inside"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "invalid_recovery")


def test_a_record_id_uses_the_server_secret_as_the_archive_job_would(endpoint, photos):
    client, record = Client(endpoint["url"], token=TOKEN), "2024/ptosis/Zoë Ärztin P0042 visit 1.jpg"
    anonymized = client.deidentify(photos[0].data, record_id=record)
    assert_restored(photos[0].data, anonymized.data, client.recover(anonymized.data, record_id=record), "record id")
    # The password is the archive job's for that key under the same secret: its tools restore it too.
    restored, status = recover_file(endpoint["model"], image_password(Secret(SERVER_SECRET), record), anonymized.data)
    assert status == "recovered"
    assert recover_file(endpoint["model"], image_password(Secret("another secret"), record), anonymized.data)[1] \
        == "wrong password"


def test_recovery_needs_the_servers_token(endpoint, photos):
    anonymized = Client(endpoint["url"]).deidentify(photos[1].data, password=PASSWORDS[0]).data
    url, identity = endpoint["url"] + "/v1/recover", {"X-Medeid-Password": "patient%20password%200%20%C3%A9"}
    missing = requests.post(url, data=anonymized, headers=identity, timeout=30)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "token_required"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.post(url, data=anonymized, headers={**identity, "Authorization": "Bearer " + TOKEN[:-1]},
                          timeout=30)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "token_rejected"
    # Checked before the body is read: no token, no upload of any size.
    big = requests.post(url, data=b"\0" * (MAX_BODY + 1), headers=identity, timeout=30)
    assert big.status_code == 401
    right = requests.post(url, data=anonymized, headers={**identity, "Authorization": "Bearer " + TOKEN}, timeout=30)
    assert right.status_code == 200 and sniff(right.content) == sniff(photos[1].data)


def _chunked(data: bytes):
    for start in range(0, len(data), 65536):  # a generator body: sent chunked, without Content-Length
        yield data[start:start + 65536]


@pytest.mark.parametrize("name, expected", [
    ("incoming/empty upload.jpg", (400, "empty_body")),
    ("incoming/notes.jpg", (415, "not_an_image")),
    ("incoming/truncated.jpg", (422, "corrupt_image")),
    ("incoming/corrupt.jpg", (422, "corrupt_image")),
    ("incoming/animated.gif", (415, "unsupported_image")),
    ("blank", (422, "no_face|borderline_face")),  # the briefly trained detector sees a shadow of a face in it
    ("incoming/bomb.png", (413, "image_too_large")),
    ("incoming/ct-like.dcm", (415, "unsupported_image")),
    ("oversized", (413, "body_too_large")),
    ("oversized, chunked", (413, "body_too_large")),
])
def test_bad_bodies_get_a_clear_4xx_with_a_json_error(endpoint, name, expected):
    trouble = {f.key: f.data for f in trouble_files(seed=3)}
    body = {"blank": encoded(Image.new("RGB", (160, 120), (128, 128, 128)), "PNG"),
            "oversized": b"\xff\xd8\xff" + bytes(MAX_BODY),
            "oversized, chunked": _chunked(b"\xff\xd8\xff" + bytes(MAX_BODY))}.get(name) or trouble[name]
    answer = requests.post(endpoint["url"] + "/v1/deidentify", data=body, timeout=60,
                           headers={"X-Medeid-Password": "pw"})
    assert answer.status_code == expected[0] and answer.json()["error"]["code"] in expected[1].split("|"), answer.text
    assert answer.headers["Content-Type"] == "application/json"


def test_a_request_must_say_whose_password(endpoint, photos):
    url = endpoint["url"] + "/v1/deidentify"
    for headers in ({}, {"X-Medeid-Password": "pw", "X-Medeid-Record-Id": "r1"}):
        answer = requests.post(url, data=photos[0].data, headers=headers, timeout=30)
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "password_required")


def _concurrently(url: str, jobs: list[tuple[bytes, str]], clients: int):
    local = threading.local()

    def call(job):
        local.client = getattr(local, "client", None) or Client(url)
        return local.client.deidentify(job[0], password=job[1])

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(call, jobs))


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(endpoint, photos):
    jobs = [(photos[i % len(photos)].data, PASSWORDS[i]) for i in range(32)]
    answers = _concurrently(endpoint["url"], jobs, clients=16)
    assert max(a.batch for a in answers) > 1  # requests shared forward passes
    for i, (answer, (data, password)) in enumerate(zip(answers, jobs)):
        # Its own photo, under its own password: only then does recovery succeed and match.
        restored, status = recover_file(endpoint["model"], password, answer.data)
        assert status == "recovered", i
        assert_restored(data, answer.data, restored, f"request {i}")
        assert recover_file(endpoint["model"], PASSWORDS[(i + 1) % 32], answer.data)[1] == "wrong password"


def test_batching_is_reconfigured_without_a_restart(endpoint, photos):
    from ray import serve

    client, before = Client(endpoint["url"]), Client(endpoint["url"]).ready()
    serve.run(app(endpoint["args"].model_copy(update={"max_batch_size": 1})), name="medeid", route_prefix="/")
    try:
        assert client.ready()["max_batch_size"] == 1
        answers = _concurrently(endpoint["url"], [(p.data, "pw") for p in photos[:12]], clients=8)
        assert {a.batch for a in answers} == {1}
    finally:
        serve.run(app(endpoint["args"]), name="medeid", route_prefix="/")
    assert client.ready()["max_batch_size"] == before["max_batch_size"]


def test_the_check_job_deploys_beside_the_app_and_round_trips(endpoint, small_models, tmp_path):
    files = hospital_files(6, seed=9)  # 6 photos and 8 trouble files
    for f in files:
        (tmp_path / "in" / f.key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f.key).write_bytes(f.data)
    # The archive job's copy of them under the server's secret, in its default mode (the seals in its
    # store), made by the job's own actor class in this process: the check restores it by record id.
    layout = ArchiveLayout.beside(str(tmp_path / "in"), str(tmp_path / "shared"))
    AnonymizeFiles(layout, *small_models, Secret(SERVER_SECRET), "r1")(
        {"key": [f.key for f in files], "size": [len(f.data) for f in files]})
    shared = [r for r in latest(read_manifest(layout.manifest)).to_pylist() if r["status"] == ANONYMIZED]
    assert len(shared) == 6 and {r["recovery"] for r in shared} == {"separate"}
    args = endpoint["args"]
    check = check_endpoint(*small_models, str(tmp_path / "in"), str(tmp_path / "out"), args.secret_file,
                           args.token_file, shared_uri=layout.output, photos=len(files), port=endpoint["port"],
                           config=args.config)
    assert check.sent == 14 and check.restored == check.answered["200"] == 6
    assert check.archive_restored == check.archive_copies == 6  # from the archive job's store
    assert sum(check.answered.values()) == 14 and check.answered.get("413 image_too_large") == 1
    with Image.open(tmp_path / "out" / "serve-check.png") as grid:
        assert grid.height > 6 * 128 and grid.width > 3 * 128  # a row per de-identified photo
    assert requests.get(endpoint["url"] + "/readyz", timeout=10).ok  # the app beside it is untouched


def test_no_password_token_or_secret_reaches_a_ray_log(endpoint, photos, ray_session):
    # Run after the others (file order): every request above has been logged by now.
    Client(endpoint["url"], token=TOKEN).deidentify(photos[0].data, password=PASSWORDS[0])
    context = ray_session.get_runtime_context()
    logs = Path(context.get_temp_dir()) / context.get_session_name() / "logs"
    texts = [s.encode() for s in (SERVER_SECRET, TOKEN, PASSWORDS[0], "patient%20password")]
    leaked = [p for p in logs.rglob("*") if p.is_file() and any(t in p.read_bytes() for t in texts)]
    assert logs.is_dir() and not leaked
