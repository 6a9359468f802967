"""PatchCore at production scale: the memory bank as a budget, the two-stage greedy coreset and
the inverted-file search, on constructed data where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from defectflow.artifacts.checkpoint import load_checkpoint, save_checkpoint
from defectflow.models import backends
from defectflow.models.backends.base import Features
from defectflow.models.backends.coreset import flat_patches, select_bank
from defectflow.models.backends.ivf import IvfIndex


def _images(n: int, c: int = 24, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    """Patch features ``[n, c, h, w]`` of near-identical parts: a few patch kinds placed on a
    shared layout, with noise, so patches cluster as real ones do."""
    rng = np.random.default_rng(seed)
    kinds = 4.0 * rng.standard_normal((12, c))
    layout = rng.integers(0, 12, (h, w))
    base = kinds[layout].transpose(2, 0, 1)
    return (base + 0.5 * rng.standard_normal((n, c, h, w))).astype(np.float32)


def _features(patch: np.ndarray) -> Features:
    return Features([f"i{k}" for k in range(len(patch))], patch, patch.mean(axis=(2, 3)))


def _radius(patch: np.ndarray, rows: np.ndarray) -> float:
    """Largest distance of any candidate patch to its nearest bank entry (float64)."""
    x = flat_patches(patch).astype(np.float64)
    b = x[rows]
    d2 = (x * x).sum(1)[:, None] - 2 * x @ b.T + (b * b).sum(1)[None]
    return float(np.sqrt(max(d2.min(1).max(), 0.0)))


def test_index_finds_the_exact_neighbour_where_the_answer_is_known():
    rng = np.random.default_rng(0)
    centres = 10.0 * rng.standard_normal((40, 32))
    bank = (np.repeat(centres, 50, axis=0) + 0.1 * rng.standard_normal((2000, 32))).astype(
        np.float32
    )
    q = bank[::7] + np.float32(0.03) * rng.standard_normal((286, 32), dtype=np.float32)
    prepared = IvfIndex.build(bank, 40).prepare(bank)
    got = prepared.sq_distances(q, probe=2)  # its own cluster (whole, or split in two)
    truth = ((q - bank[::7]) ** 2).sum(1)  # each query's nearest entry is the one it copies
    assert (((q[:, None] - bank[None]) ** 2).sum(-1).argmin(1) == np.arange(0, 2000, 7)).all()
    np.testing.assert_allclose(got, truth, atol=2e-3)  # float32 cancellation at |x|^2 ~ 3000


def test_indexed_search_keeps_image_scores_exact_and_reports_its_recall():
    train, test = _images(40), _images(12, seed=1)
    test[6:, :, 2:4, 3:5] += 3.0  # half the test images carry a defect
    params = {"backend": "patchcore", "coreset_ratio": 0.5, "ivf_lists": 48, "ivf_probe": 2}
    ivf = backends.build(params | {"search": "ivf"})
    facts = ivf.fit(_features(train))
    search = facts["search"]
    assert search["method"] == "ivf" and search["lists"] == 48 and search["probe"] == 2
    assert 0.0 < search["recall"] <= 1.0 and search["queries"] > 100
    assert search["mean_overstatement"] >= 0.0  # the index can only overstate a distance

    exact = backends.build(params | {"search": "exact"})
    exact.fit(_features(train))
    assert np.array_equal(exact.bank, ivf.bank) and exact.index is None
    s_ivf, m_ivf = ivf.score(_features(test))
    s_exact, m_exact = exact.score(_features(test))
    np.testing.assert_allclose(s_ivf, s_exact, rtol=1e-5)  # certified: the same image scores
    assert (m_ivf >= m_exact - 1e-4).all()  # a map patch is overstated or exact, never below
    hit = np.isclose(m_ivf, m_exact, rtol=1e-4, atol=1e-5).mean()
    assert hit < 1.0 and abs(hit - search["recall"]) < 0.2  # misses happen, about as measured


def test_exact_search_gives_the_brute_force_maps_and_image_scores():
    train, test = _images(20), _images(5, seed=2)
    pc = backends.build({"backend": "patchcore", "coreset_ratio": 0.3, "search": "exact"})
    pc.fit(_features(train))
    scores, maps = pc.score(_features(test))
    q = flat_patches(test).astype(np.float64)
    b = pc.bank.astype(np.float64)
    d = np.sqrt(((q[:, None, :] - b[None]) ** 2).sum(-1))  # every patch to every entry
    np.testing.assert_allclose(maps, d.min(1).reshape(maps.shape), rtol=1e-4, atol=1e-4)
    # the image score as the paper writes it, all in float64 over the whole bank
    per_image = d.min(1).reshape(len(test), -1)
    for i, s in enumerate(scores):
        worst = i * per_image.shape[1] + per_image[i].argmax()
        m_star = b[d[worst].argmin()]
        nb = np.argsort(np.sqrt(((b - m_star) ** 2).sum(-1)), kind="stable")[:9]
        dist_nb = np.sqrt(((b[nb] - q[worst]) ** 2).sum(-1))
        weight = 1 - np.exp(dist_nb[0]) / np.exp(dist_nb).sum()
        assert s == pytest.approx(weight * per_image[i].max(), rel=1e-5)


def test_two_stage_bank_covers_within_its_stated_bound_and_near_the_exact_greedy():
    patch = _images(60)
    n, total = 200, 60 * 64
    one = select_bank(patch, n, 0, seed=0, room=10**9)
    two = select_bank(patch, n, 0, seed=0, room=1200)
    assert one.image_radius is None and one.global_candidates == total
    assert two.image_radius is not None and two.global_candidates <= 1200
    assert len(set(two.rows.tolist())) == n
    r_one, r_two = _radius(patch, one.rows), _radius(patch, two.rows)
    assert abs(r_one - one.radius) < 1e-3 * r_one  # the one-stage radius is the real one
    assert r_two <= two.radius_bound + 1e-4  # the stated bound holds
    assert r_two <= 1.5 * r_one  # and the bank covers nearly as well as the exact greedy's


def test_bank_is_a_budget_whatever_the_number_of_images():
    pc = backends.build({"backend": "patchcore", "coreset_ratio": 0.5, "max_bank": 100})
    facts = pc.fit(_features(_images(30)))
    assert facts["bank_size"] == 100 and facts["candidates"] == 30 * 64
    assert facts["search"] == {"method": "exact"}  # auto: a small bank is searched exactly


def test_two_stage_indexed_fit_is_deterministic_and_survives_the_checkpoint(tmp_path):
    params = {
        "backend": "patchcore",
        "coreset_ratio": 0.2,
        "max_greedy_pairs": 500 * 384,
        "search": "ivf",
        "ivf_lists": 16,
    }
    train, test = _features(_images(30)), _features(_images(4, seed=3))
    files = []
    for k in range(2):
        pc = backends.build(params)
        facts = pc.fit(train, seed=7)
        files.append(tmp_path / f"c{k}.safetensors")
        save_checkpoint(pc, files[-1])
    assert "per_image_radius" in facts and facts["radius_bound"] >= facts["covering_radius"]
    assert files[0].read_bytes() == files[1].read_bytes()
    again = load_checkpoint(files[0])
    assert again.index is not None and again.search_info() == pc.search_info()
    s0, m0 = pc.score(test)
    s1, m1 = again.score(test)
    assert np.array_equal(s0, s1) and np.array_equal(m0, m1)


def test_fold_model_of_an_indexed_bank_keeps_exact_image_scores():
    train = _features(_images(30))
    pc = backends.build(
        {
            "backend": "patchcore",
            "coreset_ratio": 0.5,
            "search": "ivf",
            "ivf_lists": 32,
            "ivf_probe": 1,
        }
    )
    pc.fit(train)
    fold = pc.fold_model(np.arange(20), train)
    assert fold.index is not None and len(fold.index.lists) == len(fold.bank)
    held = train.subset(np.arange(20, 30))
    exact = backends.build({"backend": "patchcore", "search": "exact"})
    exact.bank, exact.grid = fold.bank, fold.grid
    np.testing.assert_allclose(fold.score(held)[0], exact.score(held)[0], rtol=1e-5)
