"""An example prh-bench plugin: a colour-histogram "vision model", a generated shapes dataset,
a representational-similarity metric, and a command that exports the dataset as a folder.

docs/plugins/tutorial.md walks through it line by line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click

from prh_bench import Dataset, LoadedModel, Metric, ModelAdapter, Sample, hookimpl

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 70, 210),
    "yellow": (240, 210, 40),
}
SHAPES = ("circle", "square", "triangle", "cross")


class ShapesDataset(Dataset):
    """16 coloured shapes on white, drawn on the fly: every colour with every shape."""

    id = "example-shapes-16"
    revision = "1"
    summary = "16 generated coloured shapes with captions (example plugin)"

    def __init__(self) -> None:
        self._items = [(c, s) for c in COLOURS for s in SHAPES]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        from PIL import Image, ImageDraw

        colour, shape = self._items[index]
        image = Image.new("RGB", (64, 64), "white")
        draw = ImageDraw.Draw(image)
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse((12, 12, 52, 52), fill=fill)
        elif shape == "square":
            draw.rectangle((14, 14, 50, 50), fill=fill)
        elif shape == "triangle":
            draw.polygon([(32, 10), (54, 52), (10, 52)], fill=fill)
        else:
            draw.rectangle((26, 8, 38, 56), fill=fill)
            draw.rectangle((8, 26, 56, 38), fill=fill)
        return Sample(f"{colour}-{shape}", image, (f"a {colour} {shape}",))

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for sample in self:
            digest.update(sample.image.tobytes())
            digest.update(sample.text.encode())
        return digest.hexdigest()


def histograms(batch: list[Sample]) -> list[Any]:
    """Collate a batch into two "layers" of per-channel colour histograms (coarse, fine).

    Module level, so DataLoader worker processes can pickle it.
    """
    import torch

    layers = []
    for bins in (4, 16):
        rows = []
        for sample in batch:
            pixels = torch.tensor(list(sample.image.getdata()), dtype=torch.float32)
            hist = [torch.histc(pixels[:, c], bins=bins, min=0, max=255) for c in range(3)]
            rows.append(torch.cat(hist) / pixels.shape[0])
        layers.append(torch.stack(rows))
    return layers


class HistogramModel(LoadedModel):
    """Two "layers": a coarse and a fine per-channel colour histogram of each image."""

    num_layers = 2
    layer_names = ["hist4", "hist16"]

    def collator(self) -> Any:
        return histograms  # the work happens while collating, in the DataLoader workers

    def encode(self, inputs: Any) -> tuple[list[Any], dict[str, Any]]:
        return inputs, {}


class HistogramAdapter(ModelAdapter):
    id = "example/colour-histogram"
    modality = "vision"
    family = "example"
    tags = ("example", "offline")

    def __init__(self) -> None:
        super().__init__()
        self.metadata.parameters = 0

    def load(self, device: str = "cpu", dtype: Any = None) -> LoadedModel:
        return HistogramModel()


class RsaSpearman(Metric):
    """Representational similarity analysis: Spearman correlation of the two cosine kernels."""

    name = "example_rsa_spearman"
    summary = "Spearman correlation of the off-diagonal cosine similarities (example plugin)"
    source = "Kriegeskorte et al. 2008 (RSA)"

    def prepare(self, feats: Any) -> Any:
        import torch

        unit = torch.nn.functional.normalize(feats.double(), dim=1)
        sim = unit @ unit.T
        upper = sim[torch.triu_indices(*sim.shape, offset=1).unbind()]
        ranks = upper.argsort().argsort().double()  # ties are rare for real features
        centred = ranks - ranks.mean()
        return centred / centred.norm()  # unit vectors: the correlation is a dot product

    def compare(self, state_a: Any, state_b: Any) -> float:
        return float((state_a * state_b).sum())


@hookimpl
def register_models(register: Any) -> None:
    register(HistogramAdapter())


@hookimpl
def register_datasets(register: Any) -> None:
    register(ShapesDataset(), aliases=("shapes",))


@hookimpl
def register_metrics(register: Any) -> None:
    register(RsaSpearman)


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command(name="example-export")
    @click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
    def example_export(folder: Path) -> None:
        """Write the example shapes as a local dataset folder (PNG files + captions.jsonl)."""
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for sample in ShapesDataset():
            name = f"{sample.sample_id}.png"
            sample.image.save(folder / name)
            lines.append(json.dumps({"file": name, "caption": sample.text}))
        (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
        click.echo(f"wrote {len(lines)} samples to {folder}; use it as --dataset local:{folder}")
