"""The tiled kNN equals brute force exactly: any tiling, ties, k near N, every fast precision
(bf16 on CPU exercises the margin, the widening and the exact fallback); the scale API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import prh_bench
from prh_bench.errors import InvalidInputError
from prh_bench_plugins.knn_tiled import MIN_N, TiledKnn, error_bound
from prh_bench_plugins.knn_torch import TorchKnn, topk_lowest_index_ties


def brute(x: torch.Tensor, k: int) -> torch.Tensor:
    """The whole float64 similarity matrix; value descending, equal values by lower index."""
    xd = x.double()
    sim = torch.cat(
        [(xd[i : i + 500, None, :] * xd[None, :, :]).sum(-1) for i in range(0, len(xd), 500)]
    )
    sim.fill_diagonal_(float("-inf"))
    return topk_lowest_index_ties(sim, k)


def unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


@pytest.mark.parametrize("rows,cols", [(3, 5), (7, 13), (64, 50), (300, 300), (None, None)])
@pytest.mark.parametrize("n,d,k", [(300, 16, 5), (120, 40, 10), (64, 8, 63)])
def test_equals_brute_force_for_any_tiling(rows, cols, n, d, k):
    x = unit(n, d, seed=n + k)
    backend = TiledKnn(block_rows=rows, tile_cols=cols, margin=3)
    assert torch.equal(backend(x, k), brute(x, k))
    assert backend.stats.rows == n


def test_ties_and_duplicates_equal_knn_torch_and_brute_force():
    # dyadic entries: every routine computes the same exact inner products, so ties are real
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-2, 3, (400, 6), generator=g).float() / 4
    x[200:260] = x[:60]  # exact duplicates across tiles
    backend = TiledKnn(block_rows=32, tile_cols=57, margin=4)
    got = backend(x, 10)
    assert torch.equal(got, brute(x, 10))
    assert torch.equal(got, TorchKnn()(x, 10))
    assert backend.stats.widened > 0  # many rows' ties outlasted the margin


@pytest.mark.parametrize("precision", ["bf16", "tf32", "fp32"])
def test_every_precision_is_exact(precision):
    # bf16's bound (~1.2e-2) is wider than these similarities' gaps: widening and fallback run
    x = unit(500, 64, seed=3)
    backend = TiledKnn(precision=precision, block_rows=128, tile_cols=96, margin=2)
    assert torch.equal(backend(x, 10), brute(x, 10))
    if precision == "bf16":
        assert backend.stats.widened > 0


def test_rows_beyond_the_widened_margin_take_the_exact_path():
    # 3000 points on a sphere in 3-D: dozens lie within bf16's 2 eps of each row's k-th
    x = unit(3000, 3, seed=11)
    backend = TiledKnn(precision="bf16", margin=0, block_rows=512, tile_cols=700)
    assert torch.equal(backend(x, 2), brute(x, 2))
    assert backend.stats.exact_fallback > 0


def test_margin_zero_and_k_near_n():
    x = unit(40, 5, seed=4)
    for k in (1, 38, 39):
        assert torch.equal(TiledKnn(margin=0, block_rows=9, tile_cols=11)(x, k), brute(x, k))


def test_memory_stays_with_the_tiles():
    # block_rows x tile_cols similarities at a time, never N x N; still exact
    x = unit(2000, 24, seed=5)
    backend = TiledKnn(block_rows=50, tile_cols=100)
    assert backend._sizes(2000, "cpu") == (50, 100)
    assert torch.equal(backend(x, 10), brute(x, 10))


def test_error_bound_is_monotone_and_infinite_when_useless():
    assert 0 < error_bound("fp32", 64) < error_bound("tf32", 64) < error_bound("bf16", 64)
    assert error_bound("fp32", 4096) < 1e-3
    assert error_bound("tf32", 2**23) == float("inf")


def test_bad_inputs_are_one_line():
    with pytest.raises(InvalidInputError, match=r"topk must be in \[1, N-1\] = \[1, 9\]"):
        TiledKnn()(unit(10, 3), 10)
    bad = unit(10, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        TiledKnn()(bad, 3)
    with pytest.raises(InvalidInputError, match="overflow"):
        TiledKnn()(torch.full((10, 3), 3e19), 3)
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        TiledKnn(precision="fp8")


def test_serves_large_n_through_the_hook(fresh_plugins):
    from prh_bench.registry import get_knn_backend

    assert get_knn_backend("cpu", MIN_N, 64, 10).name == "torch-exact"
    assert get_knn_backend("cpu", MIN_N + 1, 64, 10).name == "tiled-exact"
    assert get_knn_backend("cuda", 1_000_000, 4096, 10).name == "tiled-exact"


def test_gallery_curve_equals_mutual_knn_on_each_subset(fresh_plugins):
    from prh_bench.scale import gallery_curve

    a = unit(600, 32, seed=6)
    b = a @ torch.randn(32, 16, generator=torch.Generator().manual_seed(7))  # related to a
    points = gallery_curve(a, b, [100, 600, 5000], topk=5, seed=2, log=lambda m: None)
    assert [p.n for p in points] == [100, 600]  # 5000 > N is skipped
    order = torch.randperm(600, generator=torch.Generator().manual_seed(2))
    metric = prh_bench.get_metric("mutual_knn", topk=5)
    for p in points:
        sub = order[: p.n]
        expected = metric.score(
            torch.nn.functional.normalize(a[sub], dim=1),
            torch.nn.functional.normalize(b[sub], dim=1),
        )
        assert p.score == expected
    unrelated = gallery_curve(a, unit(600, 16, seed=10), [600], topk=5, log=lambda m: None)
    assert points[1].score > unrelated[0].score + 0.05  # the shared structure shows


def test_scale_command(fresh_plugins, run_cli, tmp_path):
    import json

    a = unit(300, 16, seed=8).numpy()
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a[:, :8])
    result = run_cli(
        "scale",
        "--a",
        str(tmp_path / "a.npy"),
        "--b",
        str(tmp_path / "b.npy"),
        "--sizes",
        "100,0.3k,1M",
        "--topk",
        "5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("[") :])
    assert [r["n"] for r in rows] == [100, 300] and all(0 <= r["score"] <= 1 for r in rows)
    bad = run_cli(
        "scale", "--a", str(tmp_path / "a.npy"), "--b", str(tmp_path / "b.npy"), "--sizes", "ten"
    )
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines()[-1] == (
        "Error: gallery size 'ten' is not a number like 1000, 10k or 1M"
    )


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_gpu_equals_cpu_brute_force(precision):
    x = unit(3000, 256, seed=9)
    got = TiledKnn(precision=precision, block_rows=512, tile_cols=1024)(x.cuda(), 10)
    assert torch.equal(got.cpu(), brute(x, 10))
