"""Passwords become keys through scrypt, deterministically and apart; secrets never print."""

import hashlib
import logging
import pickle

import numpy as np
import pytest

from medeid.passwords import Secret, derive_key, derive_model_key, image_password


def test_the_same_password_gives_the_same_key_and_others_unrelated_ones():
    key = derive_key("correct horse battery staple")
    assert key.dtype == np.float32 and key.shape == (128,)
    assert np.isclose(np.linalg.norm(key), 1.0)
    np.testing.assert_array_equal(key, derive_key(Secret("correct horse battery staple")))
    np.testing.assert_array_equal(key, derive_key(b"correct horse battery staple"))
    others = np.stack([derive_key(p) for p in ("correct horse battery stapla", "Correct horse battery staple", "x")])
    assert np.abs(others @ key).max() < 0.5  # random 128-d unit vectors: |cosine| ~ 0.09
    assert derive_key("x", dim=64).shape == (64,)
    with pytest.raises(ValueError, match="empty"):
        derive_key("")


def test_each_image_gets_its_own_password_from_the_archive_secret():
    secret = Secret("archive secret")
    first = image_password(secret, "photos/P001/a.jpg")
    assert first == image_password("archive secret", "photos/P001/a.jpg")  # deterministic
    assert first != image_password(secret, "photos/P001/b.jpg")
    assert first != image_password("another secret", "photos/P001/a.jpg")
    assert image_password(secret, "Ärzte/ü 1.jpg") != image_password(secret, "Arzte/u 1.jpg")  # any key
    # Not the secret itself, nor the plain SHA-256 of secret and key.
    assert b"archive secret" not in first.reveal()


def test_an_image_password_is_expanded_by_hkdf_and_the_archive_secret_stretched_once(monkeypatch):
    from medeid import passwords

    secret = Secret("a fresh archive secret")
    scrypts = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: scrypts.append(1) or real(*a, **k))
    keys = [derive_model_key(image_password(secret, f"photos/{i}.jpg")) for i in range(5)]
    assert len(scrypts) == 1  # the secret's stretch; each image's key is HKDF
    assert len({k.cipher_key for k in keys}) == 5 and all(len(k.cipher_key) == 32 for k in keys)
    # The same text typed by hand (say, into the recovery endpoint) gives the same key.
    typed = image_password(secret, "photos/0.jpg").reveal().decode()
    assert derive_model_key(typed).cipher_key == keys[0].cipher_key
    # A password that only looks similar is stretched like any other.
    derive_model_key("mdk1-" + "0" * 63)
    assert len(scrypts) == 2
    assert passwords.DERIVED_PASSWORD.fullmatch(typed.encode())


def test_secrets_never_print(tmp_path, caplog, monkeypatch):
    secret = Secret("hunter2")
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret, str([secret]), str({"s": secret})]
    assert all("hunter2" not in text for text in shown) and "Secret(***)" in shown[0]
    with caplog.at_level(logging.INFO):
        logging.getLogger("medeid.test").info("using %s", secret)
    assert "hunter2" not in caplog.text
    assert pickle.loads(pickle.dumps(secret)) == secret  # Ray can still ship it to a worker

    path = tmp_path / "secret.txt"
    path.write_text("hunter2\n")
    assert Secret.from_file(path) == secret  # the editor's newline is not part of it
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        Secret.from_file(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt") as error:
        Secret.from_file(tmp_path / "missing.txt")
    assert "hunter2" not in str(error.value)
    monkeypatch.setenv("MEDEID_TEST_SECRET", "hunter2")
    assert Secret.from_env("MEDEID_TEST_SECRET") == secret
    with pytest.raises(KeyError, match="MEDEID_UNSET"):
        Secret.from_env("MEDEID_UNSET")
