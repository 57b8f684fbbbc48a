"""The built-in exact kNN backend: brute-force equality, chunking, tie-breaking, devices."""

from __future__ import annotations

import pytest
import torch

from prh_bench_plugins.knn_torch import TorchKnn, topk_lowest_index_ties

import reference_formulas as ref


@pytest.mark.parametrize("chunk_bytes", [4 * 100 * 7, 4 * 100 * 33, 256 * 2**20])
def test_chunked_equals_brute_force(chunk_bytes):
    feats = torch.nn.functional.normalize(torch.randn(100, 16), dim=1)
    got = TorchKnn(chunk_bytes=chunk_bytes)(feats, 9)
    assert torch.equal(got, ref.knn(feats, 9))
    assert not (got == torch.arange(100)[:, None]).any()  # self excluded


def test_ties_break_by_lower_index():
    sim = torch.tensor([[0.0, 1.0, 0.5, 1.0, 1.0, 0.5]])
    assert topk_lowest_index_ties(sim, 2).tolist() == [[1, 3]]
    assert topk_lowest_index_ties(sim, 4).tolist() == [[1, 3, 4, 2]]


def test_duplicate_rows_give_a_deterministic_graph():
    base = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    base = torch.nn.functional.normalize(base, dim=1)  # unit rows: a copy is the nearest
    feats = torch.cat([base, base, base])  # every row has two exact copies
    chunked = TorchKnn(chunk_bytes=4 * 30 * 4)
    assert torch.equal(chunked(feats, 5), chunked(feats, 5))
    # one GEMM gives exactly equal similarities to copies, so ties go to the lower index
    whole = TorchKnn()(feats, 5)
    assert torch.equal(whole, ref.knn(feats, 5))
    assert whole[0, :2].tolist() == [10, 20]


def test_k_out_of_range():
    from prh_bench import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"topk must be in \[1, N-1\] = \[1, 4\]"):
        TorchKnn()(torch.randn(5, 3), 5)


@pytest.mark.gpu
def test_cuda_equals_cpu():
    feats = torch.nn.functional.normalize(torch.randn(2048, 64), dim=1)
    cpu = TorchKnn()(feats, 10)
    cuda = TorchKnn()(feats.cuda(), 10).cpu()
    # the GEMM differs by rounding; a neighbour set may differ only at exact near-ties
    assert (cpu == cuda).float().mean() > 0.999


@pytest.mark.gpu
def test_cuda_metrics_match_cpu():
    from prh_bench import get_metric

    a = torch.nn.functional.normalize(torch.randn(512, 64), dim=1)
    b = torch.nn.functional.normalize(a @ torch.randn(64, 32) + torch.randn(512, 32), dim=1)
    for name in ("mutual_knn", "cka", "unbiased_cka"):
        cpu = get_metric(name).score(a, b)
        assert get_metric(name).score(a.cuda(), b.cuda()) == pytest.approx(cpu, abs=1e-4)


def test_overflowing_inner_products_are_a_typed_error():
    from prh_bench import InvalidInputError

    feats = torch.randn(6, 3) * 1e30  # squares overflow float32
    with pytest.raises(InvalidInputError, match="overflow torch.float32 .*L2-normalise"):
        TorchKnn()(feats, 2)
