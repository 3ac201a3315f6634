"""De-identify and recover photos with a trained MedSem-DeID model: the library's inference API.

    model = MedSemDeID.from_uri("s3://bucket/models/deid")
    anonymized = model.deidentify(photos, password)          # list of uint8 RGB photos
    restored = model.recover(anonymized, password).images    # the originals again

Per photo: the face crop (ArcFace-aligned from five landmarks, or the central square), the network
on the crop, the feathered paste back (every pixel outside the face is the photo's own), and the
original face sealed under the password into the replaced pixels (`payload`). `recover` is the
ID-decryptor: it opens that seal with the password and puts the original face back. A wrong
password opens nothing; the photo stays de-identified and its status says why.

`password` is one password for the batch or one per photo (an archive's per-image passwords);
`Secret`s, strings or bytes. Nothing here logs or returns a password or a key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medeid import storage
from medeid.codecs import sha256
from medeid.models.deid import payload
from medeid.models.deid.align import (
    PASTE_FEATHER,
    FaceCrop,
    blur_surround,
    face_crop,
    paste_back,
    paste_weight,
    surround_weight,
)
from medeid.models.deid.donors import READING_HEADS, bank_donor, donor_subject, matching_condition
from medeid.models.deid.model import MedSemDeIDNet, pose_grid
from medeid.models.deid.scene import match_scene
from medeid.models.folder import WEIGHTS_FILE
from medeid.passwords import ModelKey, Secret, derive_model_key
from medeid.pixels import to_signed, to_uint8
from medeid.synth.conditions import Condition
from medeid.threads import thread_map

RECOVERED, WRONG_PASSWORD, NO_RECOVERY_DATA = "recovered", "wrong password", "no recovery data"

Password = Secret | str | bytes


@dataclass
class Recovery:
    images: list[np.ndarray]  # restored photos; photos that could not be restored, as they were given
    status: list[str]  # per photo: recovered | wrong password | no recovery data

    @property
    def recovered(self) -> np.ndarray:
        return np.array([s == RECOVERED for s in self.status])


def donor_choice(key: ModelKey, choices: int) -> int:
    """Which of a photo's donor choices a key draws its new identity around (a hash of the key)."""
    return int.from_bytes(hashlib.sha256(b"medeid/donor\x00" + key.cipher_key).digest()[:8], "big") % choices


def pattern_seed(key: ModelKey) -> int:
    """What a key draws where the medical reading leaves the donor's look open (a hash of the key)."""
    return int.from_bytes(hashlib.sha256(b"medeid/pattern\x00" + key.cipher_key).digest()[:4], "big") % (2**31 - 1)


def _keys(password: Password | Sequence[Password], n: int, dim: int) -> list[ModelKey]:
    """One key per photo; each distinct password through the KDF once (in parallel: scrypt costs
    ~30 ms by design and releases the GIL)."""
    passwords = [password] * n if isinstance(password, (Secret, str, bytes)) else list(password)
    if len(passwords) != n:
        raise ValueError(f"{len(passwords)} passwords for {n} photos: give one password, or one per photo")
    secrets = [p if isinstance(p, Secret) else Secret(p) for p in passwords]
    distinct = list(dict.fromkeys(secrets))
    derived = dict(zip(distinct, thread_map(lambda secret: derive_model_key(secret, dim), distinct)))
    return [derived[secret] for secret in secrets]


def _footprint(shape: tuple[int, ...], where: FaceCrop,
               surround: float = 0.0) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """Pixels the crop changes (with the blurred head around it, `surround` > 0), pixels it replaces
    outright (which carry the seal), and their box."""
    weight = paste_weight(shape, where, PASTE_FEATHER)
    changed, carrier = weight > 0, weight >= 1.0 - 1e-6
    if surround:
        changed |= surround_weight(shape, where, surround) > 0
    rows, cols = np.nonzero(changed)
    if not carrier.any():
        raise ValueError("the face crop lies outside the photo")
    return changed, carrier, (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))


class MedSemDeID:
    """A trained MedSem-DeID model ready for inference (CPU, or the GPU given as `device`)."""

    def __init__(self, net: MedSemDeIDNet, version: str = "untracked", device: str = "cpu"):
        self.net = net.eval().to(device)
        self.device = device
        self.version = version
        self.resolution = net.config.image_size
        self.template = None if net.config.crop_template is None else np.asarray(net.config.crop_template)

    @classmethod
    def from_uri(cls, uri: str, settings: storage.S3Settings | None = None, device: str = "cpu") -> "MedSemDeID":
        net = MedSemDeIDNet.from_uri(uri, settings)
        version = sha256((storage.local_copy(uri, settings) / WEIGHTS_FILE).read_bytes())[:16]
        return cls(net, version, device)

    def _crops(self, images: Sequence[np.ndarray], landmarks) -> tuple[np.ndarray, list[FaceCrop]]:
        for i, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"photo {i}: expected uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
        landmarks = [None] * len(images) if landmarks is None else landmarks
        cut = [face_crop(image, self.resolution, marks, self.template)
               for image, marks in zip(images, landmarks, strict=True)]
        return np.stack([c for c, _ in cut]), [w for _, w in cut]

    @torch.no_grad()
    def deidentify_crops(self, crops: np.ndarray, keys: list[ModelKey]) -> np.ndarray:
        """The network alone: face crops uint8 (N, R, R, 3) -> de-identified crops, no seal."""
        pixels = torch.from_numpy(crops).to(self.device)
        x = to_signed(pixels)
        vectors = torch.from_numpy(np.stack([k.vector for k in keys])).to(self.device)
        choices = self.net.donor_choices(pixels)
        donors = torch.stack([row[donor_choice(k, len(row))] for row, k in zip(choices, keys)])
        reading = self.net.medical_reading(x)  # once: it picks the donor's findings and feeds the network
        out = self.net(x, vectors, self.donor_faces(reading, donors, keys), reading=reading)
        y = out["y"]
        subject = self.donor_subjects(donors, out["pose"])
        if subject is not None:  # the scene around the new head in the photo's colours: no frame
            y = match_scene(y.clamp(-1, 1), x, subject)
        return to_uint8(y)

    def donor_subjects(self, donors: torch.Tensor, pose: torch.Tensor) -> torch.Tensor | None:
        """Where each donor's head is in the output, (N, 1, R, R) in [0, 1]: their frontal face's
        `donor_subject` put in the pose the network read. None when the bank's seed is unknown."""
        config = self.net.config
        seed = config.donor_seed if config.donor_seed is not None else config.bank_seed
        if seed is None:
            return None
        frontal = torch.from_numpy(np.stack([donor_subject(d, seed, self.resolution) for d in donors.tolist()]))
        return F.grid_sample(frontal[:, None].to(pose), pose_grid(pose, self.resolution), padding_mode="border",
                             align_corners=False)

    def donor_faces(self, reading: dict[str, torch.Tensor] | None, donors: torch.Tensor,
                    keys: list[ModelKey]) -> torch.Tensor:
        """The donors' faces as network input: drawn with the condition of Enc_med's `reading` of each
        photo (`MedSemDeIDNet.medical_reading`) when the model's donors can be drawn again
        (`donor_seed`; `matching_condition`), else the bank's faces. The key picks the vessel pattern,
        which no reading holds."""
        faces = self.net.donor_images(donors)  # the bank holds them healthy: drawn again only when not
        seed = self.net.config.donor_seed
        if reading is None or seed is None:
            return faces
        probabilities = {head: reading[head].softmax(1).cpu().numpy() for head in READING_HEADS}
        for i, (donor, key) in enumerate(zip(donors.tolist(), keys)):
            person = bank_donor(donor, seed)
            condition = matching_condition({head: p[i] for head, p in probabilities.items()}, person,
                                           self.net.medical, self.resolution, pattern_seed(key),
                                           self.net.drawn_of(donor))
            if condition != Condition():
                drawn = torch.from_numpy(person.face(self.resolution, condition)).to(faces.device)
                faces[i] = to_signed(drawn[None])[0]
        return faces

    def deidentify(self, images: Sequence[np.ndarray], password: Password | Sequence[Password],
                   landmarks: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """De-identified copies of uint8 RGB photos, each carrying its sealed original face."""
        if not len(images):
            return []
        crops, places = self._crops(images, landmarks)
        keys = _keys(password, len(images), self.net.config.key_dim)
        out = []
        for image, crop, where, key in zip(images, self.deidentify_crops(crops, keys), places, keys):
            changed, carrier, box = _footprint(image.shape, where)
            photo = paste_back(image, crop, where, PASTE_FEATHER)
            values = photo[carrier].reshape(-1)
            sealed, _ = payload.seal(image[box], key.cipher_key, payload.capacity(len(values)))
            photo[carrier] = payload.embed(values, sealed).reshape(-1, 3)
            out.append(photo)
        return out

    def deidentify_faces(self, image: np.ndarray, password: Password, faces: Sequence[np.ndarray | None],
                         surround: float = 0.0) -> tuple[np.ndarray, list[bytes]]:
        """One photo and every face in it (five landmarks each; None: the central square): the
        de-identified photo, with nothing in its pixels, and one sealed original per face.

        For outputs whose pixels cannot carry the seal (JPEG, grey files): the caller stores the seals
        in the file's metadata (`medeid.archive.carrier`). Faces are replaced in turn; each seal holds
        its face's footprint as it was just before, so `recover_faces` undoes them in reverse.

        `surround` > 0 also blurs the head around each face (`align.blur_surround`: the crop's square
        grown that many times), for real photographs, where hair and the head's outline reach past
        the crop; the seal then holds that region too."""
        return self.deidentify_faces_batch([image], [password], [faces], surround)[0]

    def deidentify_faces_batch(self, images: Sequence[np.ndarray], passwords: Sequence[Password],
                               faces: Sequence[Sequence[np.ndarray | None]],
                               surround: float = 0.0) -> list[tuple[np.ndarray, list[bytes]]]:
        """`deidentify_faces` over several photos at once (the serving endpoint's dynamic batches):
        the network runs once per round on the n-th face of every photo that has one, so a batch of
        one-face photos is one forward pass."""
        if not len(images):
            return []
        self._crops(images, None)  # validates the photos
        keys = _keys(list(passwords), len(images), self.net.config.key_dim)
        photos, seals = [image.copy() for image in images], [[] for _ in images]
        for round_ in range(max((len(f) for f in faces), default=0)):
            todo = [i for i, f in enumerate(faces) if len(f) > round_]

            def cut_and_seal(i: int) -> tuple[np.ndarray, FaceCrop, bytes]:
                marks = faces[i][round_]
                crop, where = face_crop(photos[i], self.resolution, marks, self.template)
                _, _, box = _footprint(photos[i].shape, where, surround)
                return crop, where, payload.seal_face(photos[i][box], (box[0].start, box[1].start), marks,
                                                      keys[i].cipher_key)

            cut = thread_map(cut_and_seal, todo)  # sealing is PNG coding and AES: per photo, in parallel
            replaced = self.deidentify_crops(np.stack([crop for crop, _, _ in cut]), [keys[i] for i in todo])

            def paste(j: int) -> np.ndarray:
                photo = blur_surround(photos[todo[j]], cut[j][1], surround) if surround else photos[todo[j]]
                return paste_back(photo, replaced[j], cut[j][1], PASTE_FEATHER)

            pasted = thread_map(paste, range(len(todo)))
            for j, i in enumerate(todo):
                seals[i].append(cut[j][2])
                photos[i] = pasted[j]
        return list(zip(photos, seals))

    def recover_faces(self, image: np.ndarray, password: Password, seals: Sequence[bytes]) -> tuple[np.ndarray, str]:
        """`deidentify_faces` undone with the same password and its seals: (photo, status)."""
        key = _keys(password, 1, self.net.config.key_dim)[0]
        photo = image.copy()
        for sealed in reversed(seals):
            try:
                original, (row, col), marks = payload.unseal_face(sealed, key.cipher_key)
            except payload.WrongPassword:
                return image, WRONG_PASSWORD
            # The whole sealed box goes back (it may hold the blurred head around the face too): in
            # reverse order every box is the photo as it was just before its face was replaced.
            _, _, face = _footprint(photo.shape, face_crop(photo, self.resolution, marks, self.template)[1])
            box = (slice(row, row + original.shape[0]), slice(col, col + original.shape[1]))
            if not (box[0].stop <= photo.shape[0] and box[1].stop <= photo.shape[1]
                    and row <= face[0].start and face[0].stop <= box[0].stop
                    and col <= face[1].start and face[1].stop <= box[1].stop):
                raise ValueError("the recovery data does not fit this photo (another photo, or resized)")
            photo[box] = original
        return photo, RECOVERED

    def recover(self, images: Sequence[np.ndarray], password: Password | Sequence[Password],
                landmarks: Sequence[np.ndarray | None] | None = None) -> Recovery:
        """The ID-decryptor: originals of de-identified photos, given the password each was sealed with.

        `landmarks` must be the ones `deidentify` was given (None for the central square)."""
        if not len(images):
            return Recovery([], [])
        _, places = self._crops(images, landmarks)
        keys = _keys(password, len(images), self.net.config.key_dim)
        restored, status = [], []
        for image, where, key in zip(images, places, keys):
            changed, carrier, box = _footprint(image.shape, where)
            try:
                original = payload.unseal(payload.extract(image[carrier].reshape(-1)), key.cipher_key)
            except payload.NoRecoveryData:
                restored.append(image), status.append(NO_RECOVERY_DATA)
                continue
            except payload.WrongPassword:
                restored.append(image), status.append(WRONG_PASSWORD)
                continue
            photo = image.copy()
            photo[box][changed[box]] = original[changed[box]]
            restored.append(photo), status.append(RECOVERED)
        return Recovery(restored, status)
