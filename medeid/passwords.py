"""Passwords and secrets for MedSem-DeID: turned into model keys by a standard KDF, never used raw,
and never shown.

- `Secret` holds a password or an archive secret; its repr, str and format print `Secret(***)`, so
  a secret that reaches a log line, an exception or a Ray dashboard shows nothing.
- `derive_key(password)`: scrypt (RFC 7914, `hashlib.scrypt`) with a salt that names its purpose,
  stretched into the unit vector the ID-encryptor is keyed with. Same password, same key; another
  password, an unrelated key.
- `derive_model_key(password)`: the same scrypt output read as both halves MedSem-DeID needs: the
  ID-encryptor's vector and an AES-256 key that seals the photo's recovery data.
- `image_password(secret, image_key)`: each archived image's own password, so any image can be
  restored and no two share a password. The archive secret is stretched by scrypt once per process
  (`stretched`), and each image's password is HMAC-SHA256 of that and the image's key, written
  `mdk1-<64 hex>`. A password of that form is already a uniform 256-bit key, so `derive_model_key`
  expands it with HKDF instead of a second scrypt: guessing the archive secret still costs a
  scrypt per guess, and an archive pays for scrypt once instead of per photo (60 % of the per-file
  time before).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KEY_SALT = b"medeid/deid-key/v1"
IMAGE_PASSWORD_CONTEXT = b"medeid/image-password/v2\x00"
ARCHIVE_SALT = b"medeid/archive-secret/v1"
DERIVED_PREFIX = "mdk1-"  # an image password: already a uniform key (see `image_password`)
DERIVED_PASSWORD = re.compile(rb"mdk1-[0-9a-f]{64}")
HKDF_INFO = b"medeid/model-key/v1"
# scrypt cost: 16 MiB and ~50 ms a password on one core, as OWASP suggests for interactive use.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class Secret:
    """A password or secret that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes):
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if not raw:
            raise ValueError("a password or secret cannot be empty")
        self._value = raw

    @classmethod
    def from_file(cls, path: str | Path) -> "Secret":
        """The file's content, without the trailing newline an editor adds."""
        try:
            raw = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as error:
            raise FileNotFoundError(f"cannot read the secret file {path}: {error.strerror}") from None
        if not raw:
            raise ValueError(f"the secret file {path} is empty")
        return cls(raw)

    @classmethod
    def from_env(cls, name: str) -> "Secret":
        value = os.environ.get(name)
        if not value:
            raise KeyError(f"the environment variable {name} is not set or empty")
        return cls(value)

    def reveal(self) -> bytes:
        """The secret's bytes, for a KDF or an HMAC; never for printing."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value).digest())


def _secret(value: Secret | str | bytes) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)


@dataclass(frozen=True, repr=False)
class ModelKey:
    """What one password keys in MedSem-DeID; prints nothing of itself."""

    vector: np.ndarray = field(compare=False)  # float32 unit vector: the ID-encryptor's key
    cipher_key: bytes  # AES-256: seals the recovery data hidden in the de-identified photo

    def __repr__(self) -> str:
        return "ModelKey(***)"


def derive_model_key(password: Secret | str | bytes, dim: int = 128) -> ModelKey:
    """KDF(password) -> 64 bytes: the first 32 seed the key vector, the last 32 are the AES key. The
    KDF is scrypt, or HKDF-SHA256 for a derived image password (`mdk1-` and 64 hex digits), which
    is a uniform 256-bit key already."""
    raw = _secret(password).reveal()
    if DERIVED_PASSWORD.fullmatch(raw):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        out = HKDF(hashes.SHA256(), length=64, salt=KEY_SALT, info=HKDF_INFO).derive(raw)
    else:
        out = hashlib.scrypt(raw, salt=KEY_SALT, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=64)
    vector = np.random.default_rng(np.frombuffer(out[:32], dtype=np.uint32)).standard_normal(dim)
    return ModelKey((vector / np.linalg.norm(vector)).astype(np.float32), out[32:])


def derive_key(password: Secret | str | bytes, dim: int = 128) -> np.ndarray:
    """The ID-encryptor's key of `password`: a float32 unit vector of `dim` values."""
    return derive_model_key(password, dim).vector


@functools.lru_cache(maxsize=8)
def stretched(secret: Secret) -> Secret:
    """scrypt of an archive secret, once per process and secret (a human-chosen secret stays as
    costly to guess as a password)."""
    return Secret(hashlib.scrypt(secret.reveal(), salt=ARCHIVE_SALT, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32))


def image_password(secret: Secret | str | bytes, image_key: str) -> Secret:
    """The password of one image of an archive: `mdk1-` + HMAC-SHA256(stretched secret, image key)."""
    digest = hmac.new(stretched(_secret(secret)).reveal(), IMAGE_PASSWORD_CONTEXT + image_key.encode("utf-8"),
                      hashlib.sha256)
    return Secret(DERIVED_PREFIX + digest.hexdigest())
