"""The serving engine without Ray or HTTP: batched de-identification gives each file its own answer,
a failure inside the model costs only its own request (a 500), and the rules on passwords, record
ids and the recovery token, and the caller's choice of where the recovery data goes. The detector
here is a fixed answer, as in the archive's unit tests."""

import base64
import json

import numpy as np
import pytest

from medeid.archive import carrier
from medeid.archive.anonymize import FileAnonymizer
from medeid.archive.formats import read_photo
from medeid.archive.recovery import EMBEDDED, MODES, NONE, SEPARATE
from medeid.config import ServeConfig
from medeid.models.deid.api import RECOVERED
from medeid.passwords import Secret, image_password
from medeid.serve.engine import Answer, Engine, Job, ServeError
from tests.archive.seal_checks import seal_traces
from tests.archive.test_anonymize_file import LANDMARKS, Found, encoded
from tests.models.test_deid_align import photo
from tests.models.test_deid_api import model, psnr  # noqa: F401  (the module's small MedSem-DeID)

OFF_THE_PHOTO = LANDMARKS + 10_000  # a face the model cannot place: its crop lies outside the photo


class FacesBySize:
    """Finds a face in every photo; in photos `bad_width` wide, one the model cannot place."""

    def __init__(self, bad_width: int | None = None):
        self.bad_width = bad_width

    def detect(self, image):
        return [Found(0.9, OFF_THE_PHOTO if image.shape[1] == self.bad_width else LANDMARKS)]


def engine_for(model, detector, secret: str | None = "server secret", token: str | None = "T0K-7f3a") -> Engine:
    return Engine(FileAnonymizer(model, detector, None), ServeConfig(max_body_bytes=1000),
                  Secret(secret) if secret else None, Secret(token) if token else None)


def pngs(n: int, width: int = 110) -> list[bytes]:
    return [encoded(photo(120, width, seed=i), "PNG") for i in range(n)]


def test_a_batch_gives_each_file_its_own_answer_like_one_at_a_time(model):
    engine = engine_for(model, FacesBySize())
    files, passwords = pngs(4), [Secret(f"pw {i}") for i in range(4)]
    batched = engine.deidentify([Job(p, f) for p, f in zip(passwords, files)])
    for i, answer in enumerate(batched):
        assert isinstance(answer, Answer) and answer.faces == 1 and answer.media_type == "image/png"
        alone = engine.deidentify([Job(passwords[i], files[i])])[0]
        restored = engine.recover(passwords[i], answer.data)
        assert restored.data == engine.recover(passwords[i], alone.data).data  # the same original comes back
        with pytest.raises(ServeError, match="wrong_password"):
            engine.recover(passwords[(i + 1) % 4], answer.data)


def test_a_model_failure_is_a_500_for_its_own_request_only(model):
    files = pngs(3) + pngs(1, width=96)  # the last one's face cannot be placed
    engine = engine_for(model, FacesBySize(bad_width=96))
    answers = engine.deidentify([Job(Secret(f"pw {i}"), f) for i, f in enumerate(files)])
    assert [type(a) for a in answers] == [Answer, Answer, Answer, ServeError]
    failed = answers[3]
    assert failed.status == 500 and failed.code == "model_failed" and "pw" not in failed.message
    assert engine.recover(Secret("pw 0"), answers[0].data).data  # the others were served in full


def test_passwords_record_ids_and_the_token(model):
    engine = engine_for(model, FacesBySize())
    assert engine.password("caf%C3%A9%20pw", None) == Secret("café pw")  # percent-encoded UTF-8
    assert engine.password(None, "MRN%2042") == image_password(Secret("server secret"), "MRN 42")
    for both_or_neither in ((None, None), ("pw", "MRN 42")):
        with pytest.raises(ServeError, match="password_required"):
            engine.password(*both_or_neither)
    with pytest.raises(ServeError, match="record_ids_off"):
        engine_for(model, FacesBySize(), secret=None).password(None, "MRN 42")
    with pytest.raises(ServeError) as missing:
        engine.authorize(None)
    assert missing.value.status == 401 and "WWW-Authenticate" in missing.value.headers
    for wrong in ("Bearer T0K-7f3b", "Basic T0K-7f3a", "T0K-7f3a"):
        with pytest.raises(ServeError) as rejected:
            engine.authorize(wrong)
        assert rejected.value.status in (401, 403) and "T0K" not in rejected.value.message
    engine.authorize("Bearer T0K-7f3a")
    with pytest.raises(ServeError, match="recovery_off"):
        engine_for(model, FacesBySize(), token=None).authorize("Bearer T0K-7f3a")
    with pytest.raises(ServeError, match="body_too_large"):
        engine.check_body(1001)


def test_the_batched_model_call_matches_one_photo_at_a_time(model):
    photos = [photo(120, 110, seed=i) for i in range(3)]
    faces = [[LANDMARKS], [], [LANDMARKS, LANDMARKS - 4]]  # one face, none, two
    passwords = ["a", "b", "c"]
    batched = model.deidentify_faces_batch(photos, passwords, faces)
    for image, password, marks, (out, seals) in zip(photos, passwords, faces, batched):
        alone, alone_seals = model.deidentify_faces(image, password, marks)
        assert len(seals) == len(marks) and psnr(out, alone) > 40
        restored, status = model.recover_faces(out, password, seals)
        assert status == RECOVERED and np.array_equal(restored, image)


def test_the_caller_chooses_where_the_recovery_data_goes(model):
    engine, password, data = engine_for(model, FacesBySize()), Secret("pw"), pngs(1)[0]
    embedded, separate, none = engine.deidentify([Job(password, data, mode) for mode in MODES])  # one batch
    assert embedded.recovery_data is None and none.recovery_data is None and separate.faces == 1
    seals = carrier.unpack(separate.recovery_data)
    assert seal_traces(embedded.data, seals)  # the default: sealed into the image
    assert seal_traces(separate.data, seals) == [] and seal_traces(none.data, seals) == []
    assert separate.data == none.data
    back = engine.recover(password, separate.data, separate.recovery_data)
    assert back.data == engine.recover(password, embedded.data).data
    for bare in (separate.data, none.data):
        with pytest.raises(ServeError, match="no_recovery_data"):
            engine.recover(password, bare)
    with pytest.raises(ServeError, match="invalid_recovery_data"):
        engine.recover(password, separate.data, b"\x00")

    assert engine.recovery_mode(None) == EMBEDDED and engine.recovery_mode(" Separate ") == SEPARATE
    assert engine.recovery_mode("none") == NONE
    with pytest.raises(ServeError, match="invalid_recovery"):
        engine.recovery_mode("inside the file")
    body = json.dumps({"image": base64.b64encode(separate.data).decode(),
                       "recovery_data": base64.b64encode(separate.recovery_data).decode()}).encode()
    assert engine.recovery_request("application/json; charset=utf-8", body) == (separate.data, separate.recovery_data)
    assert engine.recovery_request("image/png", separate.data) == (separate.data, None)
    for bad in (b'{"image": "AAAA"}', b"not json", b'{"image": "*", "recovery_data": "AAAA"}'):
        with pytest.raises(ServeError, match="invalid_recovery_request"):
            engine.recovery_request("application/json", bad)


def test_the_engine_loads_the_real_detector_by_name_and_anonymizes_a_real_photo(model, tmp_path):
    from medeid.realfaces import PORTRAITS, encode, portrait

    model.net.save(tmp_path / "deid")
    engine = Engine.from_config(ServeConfig(model_uri=str(tmp_path / "deid"), detector_uri="centerface",
                                            max_body_bytes=10**7))
    astronaut = portrait("astronaut")
    answer = engine.deidentify([Job(Secret("pw"), encode(astronaut, "JPEG"))])[0]
    assert isinstance(answer, Answer) and answer.faces == 1 and answer.media_type == "image/jpeg"
    out = read_photo(answer.data).rgb
    x1, y1, x2, y2 = PORTRAITS["astronaut"]
    assert psnr(out[y1:y2, x1:x2], astronaut[y1:y2, x1:x2]) < 25  # the face changed
    assert psnr(out[400:], astronaut[400:]) > 30  # the rest is the photo's own (one JPEG generation)
