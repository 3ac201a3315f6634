"""Where an anonymized file's recovery data (its faces' sealed originals) is kept: three modes.

- `embedded`: inside the file (`carrier`: JPEG APP11, PNG chunk, TIFF tag, DICOM private block).
  The copy is pseudonymized: whoever holds the secret gets the faces back from the copy itself.
- `separate`: in a private store beside the manifest, on the hospital's side; the shared file
  carries no seal. `RecoveryStore` keeps one blob per file, keyed by the input key and the
  output's sha256, so a seal only ever meets the exact file it was made for.
- `none`: nothing is kept; the replacement cannot be undone.

    store = RecoveryStore("s3://share/photos-recovery", settings)
    store.put("2024/a.jpg", output_sha256, seals)
    seals = store.get("2024/a.jpg", output_sha256)    # None when the store holds nothing for it
"""

from __future__ import annotations

from medeid import storage
from medeid.archive import carrier

EMBEDDED, SEPARATE, NONE = "embedded", "separate", "none"
MODES = (EMBEDDED, SEPARATE, NONE)
STORE_SUFFIX = ".seals"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"recovery mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


class NothingToRecover(ValueError):
    """The file was written in `none` mode, or its recovery data is missing from the store."""


class RecoveryStore:
    """The `separate` mode's seals: `<root>/<input key>/<output sha256>.seals`, each the packed seals
    of one anonymized file (`carrier.pack`, the same bytes the endpoint hands back)."""

    def __init__(self, root: str, settings: storage.S3Settings | None = None):
        self.root, self.settings = root.rstrip("/"), settings

    def uri(self, input_key: str, output_sha256: str) -> str:
        # The key as a folder: keys nest ("a" and "a/b") without a file ever standing where a folder must.
        return storage.join(self.root, input_key, output_sha256 + STORE_SUFFIX)

    def put(self, input_key: str, output_sha256: str, seals: list[bytes]) -> None:
        storage.write_bytes(self.uri(input_key, output_sha256), carrier.pack(seals), self.settings)

    def get(self, input_key: str, output_sha256: str) -> list[bytes] | None:
        uri = self.uri(input_key, output_sha256)
        if not storage.exists(uri, self.settings):
            return None
        return carrier.unpack(storage.read_bytes(uri, self.settings))
