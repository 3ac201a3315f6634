"""The identity index's chunked search against a brute-force product, and its sharing through Ray."""

import pickle
import tracemalloc

import numpy as np
import pytest

from medeid.models.identity_index import IdentityIndex

N, D, B = 10_000, 512, 37
# float16 rounds each coordinate by at most 2^-11 relative, so a cosine of unit vectors moves by at
# most 2^-11 ~ 4.9e-4 (Cauchy-Schwarz); 1e-3 leaves room for float32 summation.
FLOAT16_TOLERANCE = 1e-3


def unit_rows(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng, N)
    return vectors, unit_rows(rng, B), [f"patient-{i // 3}" for i in range(N)], [f"photos/{i}.jpg" for i in range(N)]


@pytest.mark.parametrize("chunk_rows", [1000, 777, N, 3 * N])
def test_max_similarity_equals_brute_force(data, chunk_rows):
    vectors, queries, patients, keys = data
    index = IdentityIndex(vectors, patients, keys, chunk_rows=chunk_rows)
    similarity, rows = index.max_similarity(queries)
    assert similarity.dtype == np.float32 and rows.dtype == np.int64 and similarity.shape == rows.shape == (B,)

    stored = queries @ index.embeddings.astype(np.float32).T  # the full (B, N) product, on the same float16 rows
    assert np.array_equal(rows, stored.argmax(axis=1))
    np.testing.assert_allclose(similarity, stored.max(axis=1), atol=1e-5)
    exact = queries @ vectors.T  # before float16 rounding
    np.testing.assert_allclose(similarity, exact.max(axis=1), atol=FLOAT16_TOLERANCE)


def test_queries_of_any_scale_are_normalised(data):
    vectors, queries, patients, keys = data
    index = IdentityIndex(vectors, patients, keys, chunk_rows=1000)
    similarity, rows = index.max_similarity(queries)
    scaled, scaled_rows = index.max_similarity(queries * 7.5)
    assert np.array_equal(rows, scaled_rows)
    np.testing.assert_allclose(scaled, similarity, atol=1e-6)


def test_nearest_names_the_right_patient(data):
    vectors, _, patients, keys = data
    index = IdentityIndex(vectors, patients, keys, chunk_rows=999)
    rng = np.random.default_rng(1)
    picked = [5, 4_321, N - 1]
    # Another photo of the same face: the stored vector plus noise of about half its length.
    queries = vectors[picked] + 0.02 * rng.standard_normal((len(picked), D)).astype(np.float32)
    found = index.nearest(queries)
    assert [f["patient_id"] for f in found] == [patients[i] for i in picked]
    assert [f["photo_key"] for f in found] == [keys[i] for i in picked]
    assert all(isinstance(f["similarity"], float) and f["similarity"] > 0.8 for f in found)


def test_memory_is_bounded_by_one_chunk():
    rng = np.random.default_rng(2)
    n, d, b, chunk_rows = 10_000, 64, 2_000, 500
    index = IdentityIndex(unit_rows(rng, n, d), ["p"] * n, ["k"] * n, chunk_rows=chunk_rows)
    queries = unit_rows(rng, b, d)
    tracemalloc.start()
    try:
        index.max_similarity(queries)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_chunk = b * chunk_rows * 4 + chunk_rows * d * 4  # product + float32 chunk: 4.1 MB
    full_product = b * n * 4  # 80 MB
    assert peak < 1.5 * one_chunk < full_product / 10


def test_empty_index_and_wrong_dimension_are_clear_errors(data):
    vectors, queries, patients, keys = data
    empty = IdentityIndex(np.zeros((0, D), np.float16), [], [])
    assert len(empty) == 0 and empty.dim == D
    with pytest.raises(ValueError, match="index is empty"):
        empty.max_similarity(queries)
    index = IdentityIndex(vectors[:10], patients[:10], keys[:10])
    with pytest.raises(ValueError, match=r"queries must be \(B, 512\).*\(37, 128\)"):
        index.max_similarity(queries[:, :128])
    with pytest.raises(ValueError, match=r"queries must be \(B, 512\)"):
        index.nearest(queries[0])
    with pytest.raises(ValueError, match="10 embeddings but 9 patient ids"):
        IdentityIndex(vectors[:10], patients[:9], keys[:10])


def test_the_matrix_is_stored_as_float16(data):
    vectors, _, patients, keys = data
    index = IdentityIndex(vectors, patients, keys)
    assert index.embeddings.dtype == np.float16 and len(index) == N and index.dim == D
    with pytest.raises(TypeError, match="to_ref"):
        pickle.dumps(index)


def test_ref_round_trip_shares_the_matrix_without_copying(ray_session, data):
    vectors, queries, patients, keys = data
    index = IdentityIndex(vectors, patients, keys, model="sha-x", chunk_rows=1000)
    ref = index.to_ref()
    assert index.to_ref() is ref  # put once

    rebuilt = IdentityIndex.from_ref(ref)
    # A read-only array is a view of the object store's shared memory, not a private copy.
    assert not rebuilt.embeddings.flags.writeable and not rebuilt.embeddings.flags.owndata
    assert np.array_equal(rebuilt.embeddings, index.embeddings)
    assert rebuilt.patient_ids.to_pylist() == patients and rebuilt.photo_keys.to_pylist() == keys
    assert (rebuilt.model, rebuilt.chunk_rows) == ("sha-x", 1000)
    for got, want in zip(rebuilt.max_similarity(queries), index.max_similarity(queries)):
        assert np.array_equal(got, want)

    @ray_session.remote
    def in_a_worker(refs):
        there = IdentityIndex.from_ref(refs[0])  # a nested ref: Ray leaves it for the worker to get
        return there.embeddings.flags.writeable, there.nearest(queries[:2])

    writeable, found = ray_session.get(in_a_worker.remote([ref]))
    assert not writeable and found == index.nearest(queries[:2])


def patient_world(rng: np.random.Generator, patients: int, photos: int, d: int = 64, spread: float = 0.6):
    """Photos scattered around one random point per patient: their unit embeddings and patient ids."""
    centres = unit_rows(rng, patients, d)
    noise = rng.standard_normal((patients * photos, d)).astype(np.float32) * spread / np.sqrt(d)
    vectors = np.repeat(centres, photos, axis=0) + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), centres, np.repeat(np.arange(patients), photos)


@pytest.mark.parametrize("chunk_rows", [97, 100_000])
def test_open_set_threshold_passes_strangers_and_stops_the_patients_other_photos(chunk_rows):
    rng = np.random.default_rng(3)
    vectors, centres, patients = patient_world(rng, 300, 3)
    index = IdentityIndex(vectors, [f"P{p}" for p in patients], [f"k{i}" for i in range(len(vectors))],
                          chunk_rows=chunk_rows)
    far = 0.02
    threshold = index.open_set_threshold(far)

    # Brute force: each photo's nearest photo of another patient, and the value `far` of them reach.
    stored = index.embeddings.astype(np.float32)
    product = stored @ stored.T
    product[patients[:, None] == patients[None, :]] = -np.inf
    nearest_other = np.sort(product.max(axis=1))
    assert threshold == pytest.approx(nearest_other[int(np.ceil(len(nearest_other) * (1 - far))) - 1], abs=1e-6)

    # Fresh strangers (from the same population) reach it about as often as `far` says...
    strangers, _, _ = patient_world(np.random.default_rng(4), 1000, 1)
    stranger_best, _ = index.max_similarity(strangers)
    assert np.mean(stranger_best >= threshold) < 3 * far
    # ...where the per-pair rule at the same FAR (pairs of different patients) would stop most of them.
    pair_threshold = np.quantile(product[np.isfinite(product)], 1 - far)
    assert np.mean(stranger_best >= pair_threshold) > 0.5
    # A new photo of an indexed patient is still caught.
    new_photos = centres + rng.standard_normal(centres.shape).astype(np.float32) * 0.6 / np.sqrt(centres.shape[1])
    new_best, _ = index.max_similarity(new_photos)
    assert np.mean(new_best >= threshold) > 0.9


def test_open_set_threshold_from_a_sample_of_photos_and_its_errors():
    rng = np.random.default_rng(5)
    vectors, _, patients = patient_world(rng, 400, 3)
    index = IdentityIndex(vectors, [f"P{p}" for p in patients], [f"k{i}" for i in range(len(vectors))])
    full, sampled = index.open_set_threshold(0.05), index.open_set_threshold(0.05, max_queries=600)
    assert sampled != full and abs(sampled - full) < 0.03
    with pytest.raises(ValueError, match="at least two patients"):
        IdentityIndex(vectors[:3], ["P0"] * 3, ["a", "b", "c"]).open_set_threshold(0.05)
    with pytest.raises(ValueError, match="far must lie"):
        index.open_set_threshold(1.5)
