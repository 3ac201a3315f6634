"""Passwords and secrets for MedSem-DeID: turned into model keys by a standard KDF, never used raw,
and never shown.

- `Secret` holds a password or an archive secret; its repr, str and format print `Secret(***)`, so
  a secret that reaches a log line, an exception or a Ray dashboard shows nothing.
- `derive_key(password)`: scrypt (RFC 7914, `hashlib.scrypt`) with a salt that names its purpose,
  stretched into the unit vector the ID-encryptor is keyed with. Same password, same key; another
  password, an unrelated key.
- `derive_model_key(password)`: the same scrypt output read as both halves MedSem-DeID needs: the
  ID-encryptor's vector and an AES-256 key that seals the photo's recovery data.
- `image_password(secret, image_key)`: each archived image's own password, HMAC-SHA256 of the
  archive secret and the image's key, so any image can be restored and no two share a password.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KEY_SALT = b"medeid/deid-key/v1"
IMAGE_PASSWORD_CONTEXT = b"medeid/image-password/v1\x00"
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
    """scrypt(password) -> 64 bytes: the first 32 seed the key vector, the last 32 are the AES key."""
    out = hashlib.scrypt(_secret(password).reveal(), salt=KEY_SALT, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=64)
    vector = np.random.default_rng(np.frombuffer(out[:32], dtype=np.uint32)).standard_normal(dim)
    return ModelKey((vector / np.linalg.norm(vector)).astype(np.float32), out[32:])


def derive_key(password: Secret | str | bytes, dim: int = 128) -> np.ndarray:
    """The ID-encryptor's key of `password`: a float32 unit vector of `dim` values."""
    return derive_model_key(password, dim).vector


def image_password(secret: Secret | str | bytes, image_key: str) -> Secret:
    """The password of one image of an archive: HMAC-SHA256(archive secret, image key)."""
    digest = hmac.new(_secret(secret).reveal(), IMAGE_PASSWORD_CONTEXT + image_key.encode("utf-8"), hashlib.sha256)
    return Secret(digest.hexdigest())
