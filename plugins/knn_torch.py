"""The built-in exact kNN backend: chunked inner-product top-k in torch, on CPU and CUDA.

Rows are processed in chunks so memory stays O(N*k + chunk*N). Neighbours are ordered by
similarity; equal similarities are broken by the lower sample index, so the graph is the same
on every run. (Equality is of the computed float similarities: a GEMM of another shape or on
another device may round a dot product differently, which can reorder near-ties. Up to 256 MiB
of similarities is one GEMM, as in the reference, so N <= 8192 is never chunked.)
The backend answers last (``trylast``): a faster plugin may serve first.
"""

from __future__ import annotations

from prh_bench import hookimpl
from prh_bench_plugins.shared import topk_lowest_index_ties

#: bytes one chunk of the similarity matrix may take
DEFAULT_CHUNK_BYTES = 256 * 2**20


class TorchKnn:
    name = "torch-exact"

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes

    def __repr__(self) -> str:
        return f"TorchKnn(chunk_bytes={self.chunk_bytes})"

    def __call__(self, feats, k: int):
        import torch

        n = feats.shape[0]
        if not 1 <= k < n:
            from prh_bench.errors import InvalidInputError

            raise InvalidInputError(f"topk must be in [1, N-1] = [1, {n - 1}], got {k}")
        chunk = max(1, min(n, self.chunk_bytes // (4 * n)))
        out = torch.empty(n, k, dtype=torch.long, device=feats.device)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            sim = feats[start:stop] @ feats.T  # one GEMM when the whole matrix fits a chunk
            rows = torch.arange(stop - start, device=feats.device)
            sim[rows, rows + start] = float("-inf")  # a sample is not its own neighbour
            found = topk_lowest_index_ties(sim, k)
            # overflowed products are +inf or NaN, and topk ranks both first: look only there
            if not bool(torch.isfinite(sim.gather(1, found)).all()):
                from prh_bench.errors import InvalidInputError

                raise InvalidInputError(
                    f"inner products of the features overflow {feats.dtype} (largest |value| "
                    f"{feats.abs().max().item():.3g}); scale the features down or L2-normalise them"
                )
            out[start:stop] = found
        return out


@hookimpl(trylast=True)
def knn_backend(device: str, n: int, dim: int, k: int):
    return TorchKnn()
