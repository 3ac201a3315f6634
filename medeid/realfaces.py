"""A check set of real photographs, built offline from what installed packages carry.

    photos = real_photos()            # -> list[RealPhoto]: file bytes and ground-truth face boxes

Sources: scikit-image's `astronaut` (Eileen Collins, 512 px) and matplotlib's `grace_hopper.jpg`
sample (512 x 600), whose face boxes were drawn by hand (hairline or cap brim to chin, ear to ear;
`PORTRAITS`); scikit-image's `lfw_subset` (100 real faces from Labeled Faces in the Wild, grey 25 x 25
crops from eyebrows to chin, so the crop is the box); and the face-free `coffee`, `chelsea` (a cat)
and `rocket`. From them, photos composed the way clinics take them: a portrait at face sizes from
24 px to most of the frame, several faces in one photo, JPEG rotated by its EXIF tag, grey, JPEG at
low quality, a face partly cut off at the frame's edge, and the face-free pictures in the same forms.
Every box is known from how the photo was made, in the photo as displayed (EXIF applied).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Hand-drawn face boxes (x1, y1, x2, y2) of the two portraits, in their own pixels.
PORTRAITS = {"astronaut": (176, 60, 274, 184), "grace_hopper": (168, 138, 362, 338)}
FACE_FREE = ("coffee", "chelsea", "rocket")
SCALE_SIZES = (24, 32, 40, 48, 64, 96, 128, 192, 320)  # face sizes (box's longer side) of the series
CANVAS = 512
LOW_QUALITY = 20


@dataclass(frozen=True)
class RealPhoto:
    key: str  # file name in the check set, e.g. "scale/astronaut-048.jpg"
    data: bytes  # the encoded file
    faces: tuple[tuple[float, float, float, float], ...]  # ground-truth boxes as displayed
    kind: str  # portrait | scale | group | exif | grey | low_jpeg | edge | face_free


def face_size(box) -> float:
    """A face's size: its box's longer side, in pixels."""
    return float(max(box[2] - box[0], box[3] - box[1]))


def portrait(name: str) -> np.ndarray:
    if name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as file:
            return np.asarray(Image.open(file).convert("RGB"))
    from skimage import data

    return data.astronaut()


def face_free(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def lfw_faces(count: int = 100) -> np.ndarray:
    """(count, 25, 25, 3) uint8: the first `count` of scikit-image's 100 LFW faces (its other 100 crops
    are not faces)."""
    from skimage import data

    faces = (data.lfw_subset()[:min(count, 100)] * 255).round().astype(np.uint8)
    return np.repeat(faces[..., None], 3, axis=3)


def encode(rgb: np.ndarray, fmt: str = "PNG", quality: int = 90, orientation: int = 1, grey: bool = False) -> bytes:
    """`rgb` (as displayed) as a file; with an EXIF orientation, the pixels are stored turned so that a
    viewer applying the tag shows `rgb` again."""
    from medeid.archive.formats import ORIENTATION_TAG, stored_pixels

    image = Image.fromarray(stored_pixels(rgb, orientation))
    image = image.convert("L") if grey else image
    options = {"quality": quality} if fmt == "JPEG" else {}
    if orientation != 1:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A plain clinic wall: a soft two-tone gradient with a little sensor noise."""
    top, bottom = rng.uniform(120, 230, 3), rng.uniform(90, 200, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    wall = top * (1 - ramp) + bottom * ramp + rng.normal(0, 3, (height, width, 3))
    return np.clip(np.broadcast_to(wall, (height, width, 3)), 0, 255).astype(np.uint8)


def framed(image: np.ndarray, box, size: float, canvas: tuple[int, int], centre: tuple[float, float],
           rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """`image` scaled so its face `box` is `size` px, placed with the face's centre at `centre` of a
    wall of `canvas` (height, width); returns the photo and the face's box in it, clipped to the frame."""
    factor = size / face_size(box)
    scaled = np.asarray(Image.fromarray(image).resize((max(1, round(image.shape[1] * factor)),
                                                       max(1, round(image.shape[0] * factor))), Image.LANCZOS))
    photo = background(*canvas, rng)
    left = round(centre[0] - (box[0] + box[2]) / 2 * factor)
    top = round(centre[1] - (box[1] + box[3]) / 2 * factor)
    paste(photo, scaled, left, top)
    face = [box[0] * factor + left, box[1] * factor + top, box[2] * factor + left, box[3] * factor + top]
    return photo, clip_box(face, canvas)


def paste(photo: np.ndarray, piece: np.ndarray, left: int, top: int) -> None:
    """`piece` into `photo` with its top-left corner at (left, top); what falls outside is cut off."""
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + piece.shape[0], photo.shape[0]), min(left + piece.shape[1], photo.shape[1])
    if y1 > y0 and x1 > x0:
        photo[y0:y1, x0:x1] = piece[y0 - top:y1 - top, x0 - left:x1 - left]


def clip_box(box, canvas: tuple[int, int]) -> tuple:
    height, width = canvas
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3]))


def group(faces: np.ndarray, sizes: list[int], canvas: tuple[int, int], rng: np.random.Generator):
    """Several LFW faces on one wall, none overlapping: (photo, boxes)."""
    photo, boxes = background(*canvas, rng), []
    for face, size in zip(faces, sizes):
        for _ in range(50):  # a free spot, with a margin of a quarter face around each
            x, y = int(rng.integers(0, canvas[1] - size)), int(rng.integers(0, canvas[0] - size))
            margin = size / 4
            if all(x + size + margin < b[0] or b[2] + margin < x or y + size + margin < b[1] or b[3] + margin < y
                   for b in boxes):
                paste(photo, np.asarray(Image.fromarray(face).resize((size, size), Image.LANCZOS)), x, y)
                boxes.append((float(x), float(y), float(x + size), float(y + size)))
                break
    return photo, tuple(boxes)


def real_photos(lfw_count: int = 100, seed: int = 0, portraits: tuple[str, ...] = tuple(PORTRAITS)) -> list[RealPhoto]:
    """The check set: the `portraits` in every form, `lfw_count` LFW faces alone and in groups, and
    the face-free pictures. The defaults are the whole set (103 photos, 134 faces); fewer LFW faces
    and one portrait make a slice with every kind in it."""
    rng = np.random.default_rng(seed)
    photos: list[RealPhoto] = []
    add = photos.append
    for name in portraits:
        box, image = PORTRAITS[name], portrait(name)
        add(RealPhoto(f"portrait/{name}.png", encode(image), (box,), "portrait"))
        # 1. The face from 24 px to most of the frame.
        for size in SCALE_SIZES:
            canvas = (CANVAS, CANVAS) if size <= 192 else (round(size * 1.25),) * 2
            photo, face = framed(image, box, size, canvas, (canvas[1] / 2, canvas[0] / 2), rng)
            add(RealPhoto(f"scale/{name}-{size:03d}.jpg", encode(photo, "JPEG"), (face,), "scale"))
        # 2. The forms a clinic's archive holds them in: turned by EXIF, grey, low-quality JPEG, cut off.
        for orientation in (3, 6, 8):
            add(RealPhoto(f"exif/{name}-{orientation}.jpg", encode(image, "JPEG", orientation=orientation),
                          (box,), "exif"))
        add(RealPhoto(f"grey/{name}.png", encode(image, grey=True), (box,), "grey"))
        add(RealPhoto(f"low_jpeg/{name}.jpg", encode(image, "JPEG", LOW_QUALITY), (box,), "low_jpeg"))
        for side, share in (("left", 0.3), ("top", 0.25)):  # that share of the face outside the frame
            size = 160
            centre = (size * (0.5 - share), CANVAS / 2) if side == "left" else (CANVAS / 2, size * (0.5 - share))
            photo, face = framed(image, box, size, (CANVAS, CANVAS), centre, rng)
            add(RealPhoto(f"edge/{name}-{side}.jpg", encode(photo, "JPEG"), (face,), "edge"))
    faces = lfw_faces(lfw_count)
    # 3. LFW faces alone, enlarged (the crops are 25 px: larger is blurrier, as an old scan is).
    singles = faces[: (len(faces) + 1) // 2]
    for i, face in enumerate(singles):
        size = int(rng.choice([48, 64, 96, 128, 256]))
        photo, boxes = group(face[None], [size], (max(CANVAS // 2, size + 32),) * 2, rng)
        add(RealPhoto(f"lfw/single-{i:03d}.png", encode(photo), boxes, "scale"))
    # 4. Several to a photo, 24 to 128 px, some grey-JPEG'd at low quality.
    rest = faces[len(singles):]
    for i, start in enumerate(range(0, len(rest), 5)):
        members = rest[start:start + 5]
        sizes = [int(s) for s in rng.choice([24, 32, 48, 64, 96, 128], len(members))]
        photo, boxes = group(members, sizes, (480, 640), rng)
        low = i % 2 == 1
        add(RealPhoto(f"group/group-{i:02d}.jpg", encode(photo, "JPEG", LOW_QUALITY if low else 90), boxes,
                      "low_jpeg" if low else "group"))
    # 5. No face at all, in the same forms.
    for name in FACE_FREE:
        image = face_free(name)
        add(RealPhoto(f"face_free/{name}.png", encode(image), (), "face_free"))
        add(RealPhoto(f"face_free/{name}-grey-low.jpg", encode(image, "JPEG", LOW_QUALITY, grey=True), (), "face_free"))
        add(RealPhoto(f"face_free/{name}-6.jpg", encode(image, "JPEG", orientation=6), (), "face_free"))
    return photos
