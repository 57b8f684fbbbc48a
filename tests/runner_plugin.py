"""Tiny, fast, deterministic models and a dataset for the runner's tests (a real plugin)."""

from __future__ import annotations

import hashlib
import os
import time

import prh_bench
from prh_bench import hookimpl

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 210)}
SIZES = {"small": 10, "medium": 18, "large": 28}
SHAPES = ("circle", "square")


class TinyShapes(prh_bench.Dataset):
    """18 drawings: every colour x size x shape, captioned as such."""

    id = "tiny-shapes"
    revision = "1"

    def __init__(self):
        self.items = [(c, s, sh) for c in COLOURS for s in SIZES for sh in SHAPES]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image, ImageDraw

        colour, size, shape = self.items[i]
        image = Image.new("RGB", (64, 64), "white")
        r = SIZES[size]
        box = (32 - r, 32 - r, 32 + r, 32 + r)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        return prh_bench.Sample(f"s{i}", image, (f"a {size} {colour} {shape}",))

    @property
    def content_hash(self):
        return hashlib.sha256(repr(self.items).encode()).hexdigest()


def trace(name, rows):
    """Reliability tests: log every encoded batch (TINY_LOG) and slow it down (TINY_SLEEP)."""
    if os.environ.get("TINY_LOG"):
        with open(os.environ["TINY_LOG"], "a") as log:
            log.write(f"{name} {rows}\n")
    time.sleep(float(os.environ.get("TINY_SLEEP", "0")))


def pixels_of(batch):
    """Collate images to [B, 12*12*3] pixels (module level: DataLoader workers pickle it)."""
    import torch

    return (
        torch.stack(
            [
                torch.tensor(
                    list(s.image.resize((12, 12)).getdata()), dtype=torch.float32
                ).flatten()
                for s in batch
            ]
        )
        / 255
    )


def texts_of(batch):
    return [s.text for s in batch]


class PixelModel(prh_bench.LoadedModel):
    num_layers = 2
    nan_layer = None
    #: a preprocessing setting the drift tests change, as a new library version might
    gamma = 1.0
    layer_names = ["pixels", "projected"]

    def __init__(self, seed):
        import torch

        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        self.projection = torch.randn(12 * 12 * 3, 16, generator=g)

    def collator(self):
        return pixels_of

    def encode(self, pixels):
        import torch

        trace(f"pixels-{self.seed}", pixels.shape[0])
        pixels = pixels**self.gamma
        layers = [pixels, torch.tanh(pixels @ self.projection)]
        if self.nan_layer is not None:  # a broken model, for the bad-input tests
            layers[self.nan_layer] = layers[self.nan_layer] * float("nan")
        return layers, {}


class TextModel(prh_bench.LoadedModel):
    num_layers = 3
    layer_names = ["counts", "cumulative", "sine"]

    def __init__(self, seed):
        self.seed = seed

    def collator(self):
        return texts_of

    def encode(self, texts):
        import torch

        trace(f"words-{self.seed}", len(texts))
        rows = []
        for text in texts:
            v = torch.zeros(32)
            for word in text.split():
                h = int(hashlib.md5(f"{self.seed}{word}".encode()).hexdigest(), 16)
                v[h % 32] += 1.0
            rows.append(v)
        x = torch.stack(rows)
        stats = {"bits_per_byte": x.sum(dim=1) / 10}  # a stand-in statistic, per sample
        return [x, x.cumsum(dim=1), torch.sin(x * (1 + self.seed))], stats


class Tiny(prh_bench.ModelAdapter):
    family = "tiny"

    def __init__(self, id, modality, seed, fail=False, available=True, nan_layer=None):
        super().__init__()
        self.id, self.modality, self.seed = id, modality, seed
        self.fail, self.available, self.nan_layer = fail, available, nan_layer
        self.tags = ("tiny",)
        self.metadata.parameters = 0
        self.metadata.source = f"test:{id}"
        self.metadata.notes = "a hashed bag of words (test)"
        self.loads = 0

    def availability(self):
        return (True, "") if self.available else (False, "weights not downloaded (test)")

    def load(self, device="cpu", dtype=None):
        self.loads += 1
        if self.fail:
            raise prh_bench.ModelError(f"model '{self.id}' exploded while loading (test)")
        model = PixelModel(self.seed) if self.modality == "vision" else TextModel(self.seed)
        model.nan_layer = self.nan_layer
        return model


MODELS = [
    Tiny("tiny/pixels-a", "vision", 1),
    Tiny("tiny/pixels-b", "vision", 2),
    Tiny("tiny/words-a", "language", 1),
    Tiny("tiny/words-b", "language", 2),
    Tiny("tiny/words-c", "language", 3),
    Tiny("tiny/broken", "language", 4, fail=True),
    Tiny("tiny/absent", "vision", 5, available=False),
    Tiny("tiny/nan", "vision", 6, nan_layer=1),
]


@hookimpl
def register_models(register):
    for m in MODELS:
        register(m)


@hookimpl
def register_datasets(register):
    register(TinyShapes())
