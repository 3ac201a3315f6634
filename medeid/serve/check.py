"""Deploy the serving endpoint on the cluster, call it over HTTP as a clinic would, keep a picture.

    result = check_endpoint(model_uri, detector_uri, photos_uri, output_uri, secret_file, token_file)

Photos spread over `photos_uri` are sent concurrently to /v1/deidentify with their key as the record
id, then restored through /v1/recover with the bearer token. Where the archive job's anonymized copy
of the same photos is given (`shared_uri`) and the server holds the archive's secret, those files are
restored by record id too: one secret, one password per key, whichever tool made the copy. Each
goes with its recovery data from where the job's manifest says it kept it: the job's private store
(`separate`, the job's default; the check reads it, as the hospital side may) or the file. Writes
`serve-check.png` (original, de-identified, recovered) and `serve-check.json` under `output_uri`.
"""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from medeid import storage
from medeid.archive import carrier
from medeid.archive.anonymize import Decoded
from medeid.archive.manifest import ANONYMIZED, latest, read_manifest
from medeid.archive.recovery import NONE, SEPARATE, RecoveryStore
from medeid.archive.report import thumbnail
from medeid.client import Client, ServiceError
from medeid.passwords import Secret

APP_NAME, GRID_FILE, SUMMARY_FILE = "medeid-check", "serve-check.png", "serve-check.json"


@dataclass
class EndpointCheck:
    sent: int
    answered: dict[str, int]  # HTTP status (and error code) -> requests
    restored: int  # de-identified here, then restored to the original within the bar
    archive_copies: int  # the archive job's copies of the photos sent, with recovery data kept (shared_uri)
    archive_restored: int  # those restored by record id
    seconds: float
    largest_batch: int
    grid: str


def restored_within_bar(original: bytes, restored: bytes) -> bool:
    """The restored photo is the original within the DESIGN §3 recovery PSNR (30 dB)."""
    a, b = Decoded.of(original).rgb, Decoded.of(restored).rgb
    return bool(a.shape == b.shape and (np.array_equal(a, b) or peak_signal_noise_ratio(a, b, data_range=255) >= 30))


def check_endpoint(model_uri: str, detector_uri: str, photos_uri: str, output_uri: str, secret_file: str,
                   token_file: str, *, shared_uri: str | None = None, photos: int = 24, clients: int = 8,
                   port: int = 8000, config: str = "demo", settings: storage.S3Settings | None = None) -> EndpointCheck:
    """Deploys the app as `medeid-check` under /medeid-check (beside any app already served), checks
    it, and deletes it. Serve is started on 127.0.0.1:`port` unless it runs already (then at its port)."""
    from ray import serve

    from medeid.serve import AppArgs, app

    keys = sorted(storage.relative_key(photos_uri, f) for f in storage.list_files(photos_uri, settings))
    keys = [keys[int(i)] for i in np.unique(np.linspace(0, len(keys) - 1, min(photos, len(keys))).round())]
    originals = {key: storage.read_bytes(storage.join(photos_uri, key), settings) for key in keys}
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app(AppArgs(config=config, model_uri=model_uri, detector_uri=detector_uri, secret_file=secret_file,
                          token_file=token_file)), name=APP_NAME, route_prefix="/" + APP_NAME)
    url, token, local = f"http://127.0.0.1:{port}/{APP_NAME}", Secret.from_file(token_file), threading.local()
    print(f"[serve] {url} ready: {Client(url).ready()}", flush=True)

    def round_trip(key: str):
        local.client = getattr(local, "client", None) or Client(url, token=token)
        try:
            anonymized = local.client.deidentify(originals[key], record_id=key)
        except ServiceError as error:
            return key, f"{error.status} {error.code}", None, None, 0
        restored = local.client.recover(anonymized.data, record_id=key)
        return key, "200", anonymized.data, restored, anonymized.batch

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(round_trip, keys))
        seconds = time.perf_counter() - started
        archive_copies, archive_restored = _restore_archive_copies(Client(url, token=token), shared_uri, originals,
                                                                   settings)
    finally:
        serve.delete(APP_NAME)
    answered: dict[str, int] = {}
    rows, labels, restored = [], [], 0
    for key, status, anonymized, back, _ in results:
        answered[status] = answered.get(status, 0) + 1
        if anonymized is None:
            continue
        restored += restored_within_bar(originals[key], back)
        rows.append([thumbnail(originals[key]), thumbnail(anonymized), thumbnail(back)])
        labels.append(key if len(key) <= 36 else "…" + key[-35:])
    grid_uri = _write_grid(rows, labels, output_uri, settings)
    check = EndpointCheck(len(keys), answered, restored, archive_copies, archive_restored, seconds,
                          max(r[4] for r in results), grid_uri)
    storage.write_bytes(storage.join(output_uri, SUMMARY_FILE), json.dumps(asdict(check), indent=2).encode(), settings)
    return check


def _restore_archive_copies(client: Client, shared_uri: str | None, originals: dict[str, bytes],
                            settings) -> tuple[int, int]:
    """(the archive's copies tried, those restored within the bar)."""
    if not shared_uri:
        return 0, 0
    from medeid.pipelines.anonymize import ArchiveLayout

    layout = ArchiveLayout.beside("", shared_uri)
    rows = {r["input_key"]: r for r in latest(read_manifest(layout.manifest, settings)).to_pylist()}
    store, tried, restored = RecoveryStore(layout.recovery, settings), 0, 0
    for key, original in originals.items():
        row = rows.get(key)
        if row is None or row["status"] != ANONYMIZED or row["recovery"] == NONE:  # quarantined, or irreversible
            continue
        recovery_data = None
        if row["recovery"] == SEPARATE:
            seals = store.get(key, row["output_sha256"])
            recovery_data = None if seals is None else carrier.pack(seals)
        tried += 1
        try:
            back = client.recover(storage.read_bytes(storage.join(shared_uri, key), settings), record_id=key,
                                  recovery_data=recovery_data)
        except ServiceError as error:
            print(f"[serve] archive copy {key}: {error.status} {error.code}", flush=True)
            continue
        restored += restored_within_bar(original, back)
    return tried, restored


def _write_grid(rows: list, labels: list[str], output_uri: str, settings) -> str:
    from medeid.synth.contact_sheet import image_grid

    buffer = io.BytesIO()
    image_grid(rows, labels, ["sent", "/v1/deidentify", "/v1/recover"]).save(buffer, "PNG")
    uri = storage.join(output_uri, GRID_FILE)
    storage.write_bytes(uri, buffer.getvalue(), settings)
    return uri
