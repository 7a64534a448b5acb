"""The compiled k-NN score (lenet.native.knn): the k-th largest similarity against a float64
reference, the detector's scores equal to the PyTorch path's, and the switches off."""

from __future__ import annotations

import numpy as np
import pytest

from lenet.native import knn
from lenet.ood.detectors import KNN, Inputs, l2_normalise


@pytest.fixture(autouse=True)
def kernel_forced(monkeypatch):
    """The kernel at any vector width (an SSE build is only used when forced)."""
    monkeypatch.setenv("LENET_NATIVE", "1")


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return l2_normalise(rng.standard_normal((n, d)).astype(np.float32))


def reference(q: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    sims = q.astype(np.float64) @ bank.astype(np.float64).T
    return np.sort(sims, axis=1)[:, -k]


@pytest.mark.parametrize(("n", "m", "d", "k"), [
    (1, 50, 84, 5), (3, 2000, 84, 5), (7, 2000, 84, 1), (256, 2000, 84, 5),
    (5, 7, 84, 7), (9, 33, 1, 3), (4, 17, 120, 17), (6, 100, 3, 64)])
def test_the_kth_similarity_is_the_float64_reference(n, m, d, k):
    assert knn.why_not() is None
    rng = np.random.default_rng(n * 1000 + m)
    q, bank = unit(rng, n, d), unit(rng, m, d)
    got = knn.kth_similarity(q, np.ascontiguousarray(bank.T), k)
    assert got is not None and got.dtype == np.float32 and got.shape == (n,)
    np.testing.assert_allclose(got, reference(q, bank, k), atol=1e-5, rtol=0)


def test_ties_and_repeats_count_each_neighbour():
    bank = np.ones((10, 4), np.float32) / 2  # ten equal unit vectors
    q = np.array([[0.5, 0.5, 0.5, 0.5], [-0.5, -0.5, -0.5, -0.5]], np.float32)
    got = knn.kth_similarity(q, np.ascontiguousarray(bank.T), 10)
    np.testing.assert_allclose(got, [1.0, -1.0], atol=1e-6)


def test_a_k_out_of_range_takes_the_torch_path_and_shapes_are_checked():
    rng = np.random.default_rng(0)
    q, bank_t = unit(rng, 3, 8), np.ascontiguousarray(unit(rng, 20, 8).T)
    assert knn.kth_similarity(q, bank_t, 0) is None
    assert knn.kth_similarity(q, bank_t, 21) is None  # more than the bank
    assert knn.kth_similarity(q, np.ascontiguousarray(unit(rng, 100, 8).T), 65) is None
    with pytest.raises(ValueError, match="do not match"):
        knn.kth_similarity(unit(rng, 3, 9), bank_t, 5)


def test_the_detector_scores_the_same_on_either_path(monkeypatch):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((3000, 84)).astype(np.float32)
    detector = KNN(k=5, bank=2000).fit(Inputs(features, np.zeros((3000, 10)), None),
                                       np.zeros(3000))
    queries = Inputs(rng.standard_normal((300, 84)).astype(np.float32), np.zeros((300, 10)),
                     None)
    compiled = detector.score(queries)
    monkeypatch.setattr(knn, "kth_similarity", lambda *a: None)
    np.testing.assert_allclose(compiled, detector.score(queries), atol=1e-5, rtol=0)
    # A detector loaded from its state uses the new bank, not a stale transposed copy.
    other = KNN().load_state({"bank": detector.bank[::-1].copy(), "k": np.array(3)})
    monkeypatch.undo()
    expected = -np.sqrt(np.maximum(2 - 2 * reference(
        l2_normalise(queries.features), other.bank, 3), 0))
    np.testing.assert_allclose(other.score(queries), expected, atol=1e-5)


def test_lenet_native_0_turns_it_off(monkeypatch):
    rng = np.random.default_rng(2)
    q, bank_t = unit(rng, 4, 8), np.ascontiguousarray(unit(rng, 20, 8).T)
    monkeypatch.setenv("LENET_NATIVE", "0")
    assert knn.kth_similarity(q, bank_t, 5) is None
    monkeypatch.setenv("LENET_NATIVE", "1")
    assert knn.kth_similarity(q, bank_t, 5) is not None
    monkeypatch.delenv("LENET_NATIVE")  # auto: the kernel where its vectors are 8+ floats
    wide = knn.library().knn_vector_width() >= knn.MIN_VECTOR
    assert (knn.kth_similarity(q, bank_t, 5) is not None) == wide
