"""The three dataset plugins: the embedded openclipart set, local folders and wit_1024."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import prh_bench
import prh_bench.images
from prh_bench import DatasetError, Sample, get_dataset
from prh_bench.cli import cli
from prh_bench.images import BadImageError, decode_image
from prh_bench.plugins import reset


@pytest.fixture(autouse=True)
def all_plugins(monkeypatch):
    monkeypatch.delenv("PRH_BENCH_LOAD_PLUGINS", raising=False)
    reset()
    yield
    reset()


def png_bytes(color: str, size: tuple[int, int] = (32, 24), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


# --- openclipart-1024 -------------------------------------------------------------------


def test_openclipart_loads_1024_rgb_samples_with_captions():
    ds = get_dataset("openclipart-1024")
    assert ds.availability() == (True, "")
    assert len(ds) == 1024
    ids = set()
    for sample in ds:
        assert sample.image.mode == "RGB"
        assert sample.image.size == (224, 224)
        assert sample.texts and all(t.strip() for t in sample.texts)
        ids.add(sample.sample_id)
    assert len(ids) == 1024
    assert ds.captions() == [s.text for s in ds]
    assert len(set(ds.captions())) == 1024  # duplicate titles were dropped


def test_openclipart_content_hash_is_stable_across_loads():
    first = get_dataset("openclipart-1024").content_hash
    reset()  # a fresh registry builds a new dataset object that re-reads the files
    second = get_dataset("openclipart").content_hash
    assert first == second
    assert len(first) == 64 and int(first, 16) >= 0
    readme = Path(prh_bench.__file__).parent.parent / "plugins/data/openclipart-1024/README.md"
    assert first in readme.read_text()  # the documented hash is the shipped one


def test_openclipart_records_provenance_and_categories():
    ds = get_dataset("openclipart-1024")
    meta = [ds.metadata(i) for i in range(len(ds))]
    assert {m["category"].split("/")[0] for m in meta} >= {"animals", "food", "people", "tools"}
    assert len({m["category"] for m in meta}) >= 40
    for m in meta:
        assert m["source"].endswith(".svg")
        assert not m["title"].lower().startswith("clipart by")
        assert "gramastar" not in m["title"].lower()
        assert m["caption"].startswith(m["title"])


def test_openclipart_construction_is_cheap():
    from prh_bench_plugins.datasets_openclipart import OpenclipartDataset

    ds = OpenclipartDataset()
    assert ds._records is None and ds._zip is None  # nothing read until used
    with pytest.raises(DatasetError, match="takes no options"):
        ds.with_options(caption_index=1)


# --- local folders ----------------------------------------------------------------------


def make_folder(tmp_path: Path, rows: list[dict], files: dict[str, bytes]) -> Path:
    folder = tmp_path / "set"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / "captions.jsonl").write_text(lines)
    return folder


def test_local_jsonl_folder_with_one_and_several_captions(tmp_path):
    files = {"a.png": png_bytes("red"), "b.png": png_bytes("blue", mode="RGBA")}
    rows = [{"file": "a.png", "caption": "a red square"},
            {"file": "b.png", "captions": ["a blue square", "blue"]}]  # fmt: skip
    folder = make_folder(tmp_path, rows, files)
    for spec in (f"local:{folder}", str(folder)):  # the prefix and a plain path
        ds = get_dataset(spec)
        assert len(ds) == 2
        a, b = list(ds)
        assert (a.sample_id, a.texts) == ("a.png", ("a red square",))
        assert b.texts == ("a blue square", "blue") and b.text == "a blue square"
        assert a.image.mode == b.image.mode == "RGB"
        assert a.image.getpixel((0, 0)) == (255, 0, 0)
    assert get_dataset(str(folder)).content_hash == get_dataset(f"local:{folder}").content_hash


def test_local_content_hash_follows_bytes_and_captions(tmp_path):
    folder = make_folder(tmp_path, [{"file": "a.png", "caption": "red"}],
                         {"a.png": png_bytes("red")})  # fmt: skip
    before = get_dataset(str(folder)).content_hash
    assert get_dataset(str(folder)).content_hash == before
    (folder / "captions.jsonl").write_text(json.dumps({"file": "a.png", "caption": "Red"}))
    after_caption = get_dataset(str(folder)).content_hash
    (folder / "a.png").write_bytes(png_bytes("green"))
    after_image = get_dataset(str(folder)).content_hash
    assert len({before, after_caption, after_image}) == 3


def test_local_csv_folder(tmp_path):
    folder = tmp_path / "csvset"
    folder.mkdir()
    (folder / "0001.png").write_bytes(png_bytes("white"))
    (folder / "0002.png").write_bytes(png_bytes("black"))
    (folder / "captions.csv").write_text(
        'file,caption\n0001.png,a white card\n0002.png,"black, and square"\n'
    )
    ds = get_dataset(f"local:{folder}")
    assert [s.text for s in ds] == ["a white card", "black, and square"]
    assert ds.captions() == ["a white card", "black, and square"]


@pytest.mark.parametrize(
    ("row", "files", "problem"),
    [
        ({"file": "gone.png", "caption": "x"}, {}, "missing file"),
        ({"file": "c.png", "caption": "  "}, {"c.png": png_bytes("red")}, "empty caption"),
        ({"file": "c.png"}, {"c.png": png_bytes("red")}, "no caption"),
    ],
)
def test_local_bad_row_names_row_and_file(tmp_path, row, files, problem):
    good = {"file": "a.png", "caption": "fine"}
    folder = make_folder(tmp_path, [good, row], {"a.png": png_bytes("red"), **files})
    with pytest.raises(DatasetError) as err:
        get_dataset(f"local:{folder}")
    message = str(err.value)
    assert "row 2" in message and row["file"] in message and problem in message
    assert "skip_bad" in message and "\n" not in message


def test_local_corrupt_image_names_sample_row_and_file(tmp_path):
    files = {"a.png": png_bytes("red"), "bad.png": b"not an image", "cut.png": png_bytes("red")}
    files["cut.png"] = files["cut.png"][:40]  # truncated: the header reads, the pixels do not
    rows = [{"file": n, "caption": n} for n in ("a.png", "bad.png", "cut.png")]
    ds = get_dataset(str(make_folder(tmp_path, rows, files)))
    assert ds[0].text == "a.png"
    with pytest.raises(DatasetError, match=r"sample 1 \(row 2, bad.png\).*corrupt"):
        ds[1]
    with pytest.raises(DatasetError, match=r"sample 2 \(row 3, cut.png\)"):
        ds[2]


def test_local_skip_bad_rows_reports_how_many(tmp_path, caplog):
    files = {"a.png": png_bytes("red"), "bad.png": b"junk", "d.png": png_bytes("blue")}
    rows = [
        {"file": "a.png", "caption": "red"},
        {"file": "bad.png", "caption": "corrupt"},
        {"file": "missing.png", "caption": "missing"},
        {"file": "d.png", "caption": ""},
        {"file": "d.png", "caption": "blue"},
    ]
    folder = make_folder(tmp_path, rows, files)
    with caplog.at_level(logging.WARNING, logger="prh_bench.datasets"):
        ds = get_dataset(f"local:{folder}", skip_bad=True)
    assert [s.text for s in ds] == ["red", "blue"]
    assert len(ds.skipped) == 3
    assert "row 2 (bad.png)" in ds.skipped[0] and "row 3 (missing.png)" in ds.skipped[1]
    assert "skipped 3 bad row(s) of 5" in caplog.text
    assert "3 bad rows skipped" in ds.summary


def test_local_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        get_dataset(f"local:{tmp_path / 'nope'}")
    with pytest.raises(DatasetError, match="neither captions.jsonl nor captions.csv"):
        get_dataset(f"local:{tmp_path}")
    (tmp_path / "captions.csv").write_text("name,text\nx,y\n")
    with pytest.raises(DatasetError, match="needs the header 'file,caption'"):
        get_dataset(str(tmp_path))
    (tmp_path / "captions.csv").unlink()
    (tmp_path / "captions.jsonl").write_text("{broken\n")
    with pytest.raises(DatasetError, match="row 1.*not a JSON object"):
        get_dataset(str(tmp_path))
    (tmp_path / "x.png").write_bytes(png_bytes("red"))
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "x.png", "caption": "x"}))
    with pytest.raises(DatasetError, match="skip_bad only"):
        get_dataset(str(tmp_path), caption_index=1)
    with pytest.raises(DatasetError, match="true or false"):
        get_dataset(str(tmp_path), skip_bad="maybe")


# --- wit_1024 ---------------------------------------------------------------------------


def save_wit_like(tmp_path: Path) -> Path:
    """A small dataset with the schema of minhuh/prh@wit_1024, saved the datasets way."""
    datasets = pytest.importorskip("datasets")
    data = {
        "image": [{"bytes": png_bytes(c), "path": None} for c in ("red", "green", "blue")],
        "text": [["a red thing", "red"], ["a green thing", "green"], ["a blue thing", "blue"]],
        "origin": ["wit", "wit", "wit"],
    }
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "text": datasets.Sequence(datasets.Value("string")),
            "origin": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(data, features=features)
    ds.save_to_disk(str(tmp_path / "wit_saved"))
    ds.to_parquet(str(tmp_path / "wit.parquet"))
    return tmp_path / "wit_saved"


def test_wit_reads_a_saved_copy_with_caption_index(tmp_path):
    saved = save_wit_like(tmp_path)
    ds = get_dataset("wit_1024", path=str(saved))
    assert len(ds) == 3
    first = ds[0]
    assert first.image.mode == "RGB" and first.image.size == (32, 24)
    assert first.texts == ("a red thing", "red") and first.text == "a red thing"
    assert first.sample_id == "wit_1024-0000"
    alt = get_dataset("wit_1024", path=str(saved), caption_index=1)
    assert alt.captions() == ["red", "green", "blue"]
    assert alt[2].texts == ("blue", "a blue thing")
    assert alt.content_hash != ds.content_hash  # the caption in use is part of the hash
    again = get_dataset("wit_1024", path=str(saved))
    assert again.content_hash == ds.content_hash
    parquet = get_dataset("wit_1024", path=str(tmp_path / "wit.parquet"))
    assert parquet.content_hash == ds.content_hash  # same rows, same hash, either format
    with pytest.raises(DatasetError, match="caption_index 2 but it has 2 caption"):
        get_dataset("wit_1024", path=str(saved), caption_index=2)[0]
    with pytest.raises(DatasetError, match="takes the options caption_index and path"):
        get_dataset("wit_1024", split="test")


def exif_jpeg(orientation: int | None, mode: str = "RGB") -> bytes:
    """A 6x4 JPEG with a distinct left column and, if given, an EXIF orientation tag."""
    img = Image.new(mode, (6, 4), "white" if mode == "RGB" else 255)
    for y in range(4):
        img.putpixel((0, y), (200, 0, 0) if mode == "RGB" else 40)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_wit_images_are_decoded_upright_as_datasets_does(tmp_path, mode):
    """The EXIF orientation is applied as `datasets` (>= 2.19) applies it for the reference."""
    datasets = pytest.importorskip("datasets")
    numpy = pytest.importorskip("numpy")
    orientations = [None, 1, 3, 6, 8]
    blobs = [exif_jpeg(o, mode) for o in orientations]
    data = {
        "image": [{"bytes": b, "path": None} for b in blobs],
        "text": [[f"caption {i}"] for i in range(len(blobs))],
        "origin": ["wit"] * len(blobs),
    }
    datasets.Dataset.from_dict(data).to_parquet(str(tmp_path / "wit.parquet"))
    ds = get_dataset("wit_1024", path=str(tmp_path / "wit.parquet"))
    for i, (orientation, blob) in enumerate(zip(orientations, blobs, strict=True)):
        theirs = datasets.Image().decode_example({"bytes": blob, "path": None}).convert("RGB")
        ours = ds[i].image
        assert ours.mode == "RGB" and ours.size == theirs.size
        assert numpy.array_equal(numpy.asarray(ours), numpy.asarray(theirs))
        assert ours.size == ((4, 6) if orientation in (6, 8) else (6, 4))


def test_wit_content_hash_names_the_decoding(tmp_path):
    from prh_bench_plugins.shared import content_digest

    ds = get_dataset("wit_1024", path=str(save_wit_like(tmp_path)))
    raw = content_digest(
        (f"wit_1024-{i:04d}", ds._image_bytes(i, row["image"]), ds._texts(i, row["text"]))
        for i, row in enumerate(ds.rows)
    )
    assert ds.content_hash != raw  # features decoded without the EXIF rule are not reused


def test_wit_offline_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = get_dataset("wit_1024")
    ok, why = ds.availability()
    assert not ok and "Hugging Face cache" in why
    with pytest.raises(DatasetError) as err:
        len(ds)
    message = str(err.value)
    assert "\n" not in message
    assert "wit_1024" in message and str(tmp_path / "hf") in message
    assert "HF_HOME" in message and "load_dataset('minhuh/prh'" in message
    assert "--dataset openclipart-1024 works offline" in message


def test_wit_unreachable_hub_via_cli_is_one_line(tmp_path):
    # A real run of the command: the hub endpoint refuses connections, nothing is cached.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRH_BENCH"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    proc = subprocess.run(
        [sys.executable, "-m", "prh_bench", "datasets", "show", "wit_1024"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: wit_1024 is not in the")
    assert "openclipart-1024 works offline" in lines[0]
    assert "Traceback" not in proc.stderr


# --- the CLI ----------------------------------------------------------------------------


def test_cli_lists_datasets_with_size_and_availability(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = CliRunner().invoke(cli, ["datasets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.output)}
    assert rows["openclipart-1024"]["samples"] == 1024
    assert rows["openclipart-1024"]["available"] == "yes"
    assert rows["wit_1024"]["available"].startswith("no: ")
    assert "local:PATH" in rows


def test_cli_show_prints_samples_and_options(tmp_path):
    result = CliRunner().invoke(cli, ["datasets", "show", "openclipart-1024", "-n", "3"])
    assert result.exit_code == 0, result.output
    assert "1024 samples" in result.output and "openclipart-0002" in result.output
    assert result.output.count("224x224") == 3
    files = {"a.png": png_bytes("red"), "b.png": b"junk"}
    rows = [{"file": "a.png", "caption": "red one"}, {"file": "b.png", "caption": "bad"}]
    folder = make_folder(tmp_path, rows, files)
    result = CliRunner().invoke(cli, ["datasets", "show", str(folder), "-o", "skip_bad=true"])
    assert result.exit_code == 0, result.output
    assert "red one" in result.output and "1 samples" in result.output
    result = CliRunner().invoke(cli, ["datasets", "show", f"local:{tmp_path / 'no'}"])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = CliRunner().invoke(cli, ["datasets", "show", str(folder), "-o", "skip_bad"])
    assert result.exit_code == 1 and "dataset option 'skip_bad' must be KEY=VALUE" in result.output


def test_listing_datasets_does_not_import_heavy_libraries():
    code = (
        "import sys; from prh_bench.cli import main; sys.argv = ['prh-bench', 'datasets'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'timm', 'open_clip', 'datasets')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PRH_BENCH_LOAD_PLUGINS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "openclipart-1024" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


# --- image decoding: prh_bench.images, the one guard every dataset uses -----------------


def saved(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def gradient16() -> np.ndarray:
    """A 64 x 64 16-bit ramp over the whole range, 0 to 65535."""
    return np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)


@pytest.mark.parametrize(
    ("name", "opens_as", "stored"),
    [
        ("g.png", "I;16", lambda a: a),
        ("g.tif", "I;16B", lambda a: a.astype(">u2")),
        ("g.pgm", "I", lambda a: a),  # Pillow opens a 16-bit PGM as 32-bit I
    ],
)
def test_16_bit_grey_keeps_its_gradient(tmp_path, name, opens_as, stored):
    path = saved(Image.fromarray(stored(gradient16())), tmp_path / name)
    assert Image.open(path).mode == opens_as
    rgb = decode_image(path, index=0)
    assert rgb.mode == "RGB"
    pixels = np.asarray(rgb)
    expected = (gradient16() >> 8).astype(np.uint8)  # the high byte, as Pillow does for colour
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)
    assert len(np.unique(pixels)) == 256  # every level, not a clamped two-level image


def test_modes_decode_as_the_reference_converts_them(tmp_path):
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(1, (0, 0, 4, 8))
    cases = {
        "p.png": (saved(palette, tmp_path / "p.png", transparency=0), [(0, 255, 0), (255, 0, 0)]),
        "rgba.png": (saved(Image.new("RGBA", (8, 8), (10, 20, 30, 0)), tmp_path / "rgba.png"),
                     [(10, 20, 30)] * 2),  # alpha dropped, as .convert("RGB") does
        "la.png": (saved(Image.new("LA", (8, 8), (100, 50)), tmp_path / "la.png"),
                   [(100, 100, 100)] * 2),
        "1.png": (saved(Image.new("1", (8, 8), 1), tmp_path / "1.png"), [(255, 255, 255)] * 2),
    }  # fmt: skip
    assert Image.open(cases["p.png"][0]).info.get("transparency") == 0
    for name, (path, (left, right)) in cases.items():
        rgb = decode_image(path, index=0)
        assert rgb.mode == "RGB", name
        assert (rgb.getpixel((0, 0)), rgb.getpixel((7, 0))) == (left, right), name


def test_cmyk_jpeg_decodes_to_its_colour(tmp_path):
    path = saved(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    red = np.asarray(decode_image(path, index=0)).astype(int)
    assert np.abs(red - [255, 0, 0]).max() <= 8


def test_exif_transpose_is_an_option(tmp_path):
    img = Image.new("RGB", (20, 10), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    path = saved(img, tmp_path / "o.jpg", exif=exif)
    assert decode_image(path, index=0).size == (20, 10)
    assert decode_image(path, index=0, exif_transpose=True).size == (10, 20)


def png_header(width: int, height: int) -> bytes:
    """A real PNG of ``width`` x ``height`` 1-bit pixels whose data stops after one row."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = zlib.compress(bytes(1 + (width + 7) // 8))
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def refusal(source, index: int = 7) -> str:
    with pytest.raises(BadImageError) as err:
        decode_image(source, index=index)
    message = str(err.value)
    assert message.startswith(f"sample {index}: ") and "\n" not in message
    assert isinstance(err.value, DatasetError) and err.value.problem in message
    return message


def test_hostile_images_are_refused_from_the_header(tmp_path, monkeypatch):
    thin = saved(Image.new("L", (60000, 1)), tmp_path / "thin.png")
    assert thin.stat().st_size < 1000  # a few hundred bytes that would resize to gigabytes
    assert "extreme aspect ratio (60000 x 1" in refusal(thin)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(30000, 30000))  # 900 megapixels: Pillow's own bomb error
    assert "decompression bomb" in refusal(bomb)
    assert "too large (9000 x 9000" in refusal(png_header(9000, 9000))  # our MAX_PIXELS
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: only a warning
    assert "decompression bomb" in refusal(saved(Image.new("L", (40, 40)), tmp_path / "w.png"))
    monkeypatch.setattr(prh_bench.images, "MAX_FILE_BYTES", 50)
    for big_file in (thin, thin.read_bytes()):
        assert "a file over 50 bytes" in refusal(big_file)


def test_corrupt_and_unsupported_images_are_refused(tmp_path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    whole = saved(noise, tmp_path / "n.png").read_bytes()
    assert "corrupt" in refusal(whole[: len(whole) // 2])  # truncated inside the pixel data
    assert "corrupt" in refusal(b"not an image at all")
    assert "corrupt" in refusal(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")  # no gs
    floats = saved(Image.new("F", (8, 8), 0.5), tmp_path / "f.tif")
    assert "32-bit float image (mode F)" in refusal(floats)
    wide = saved(Image.new("I", (8, 8), 70000), tmp_path / "i.tif")
    assert "outside the 16-bit range" in refusal(wide)
    assert "cannot read it" in refusal(tmp_path / "missing.png")


def test_collators_refuse_an_image_that_is_not_rgb():
    from prh_bench_plugins.timm_models import ImageCollator

    collate = ImageCollator(lambda image: torch.zeros(3, 2, 2))
    assert collate([Sample("ok", Image.new("RGB", (4, 4)), ("x",))]).shape == (1, 3, 2, 2)
    with pytest.raises(DatasetError, match=r"^grey-7: the dataset gave a L image, not RGB"):
        collate([Sample("grey-7", Image.new("L", (4, 4)), ("x",))])


def test_collators_tabled_tail_equals_the_transform_bit_for_bit():
    """The batched ToTensor + Normalize (a table of 0..255) gives the per-sample floats."""
    import numpy as np
    import open_clip
    import timm
    from timm.data import create_transform, resolve_data_config
    from torchvision import transforms as T

    from prh_bench_plugins.shared import ImageCollator, split_tensor_tail

    rng = np.random.default_rng(0)
    sizes = [(23, 17), (40, 40), (17, 31), (64, 20)]
    samples = [
        Sample(str(i), Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), ("x",))
        for i, (w, h) in enumerate(sizes)
    ]
    odd = T.Normalize([0.123, 0.77, 0.5], [0.31, 0.049, 1.7])
    plain = T.Compose([T.Resize(19), T.CenterCrop(19), T.ToTensor(), odd])
    net = timm.create_model("resnet18", pretrained=False)
    timm_eval = create_transform(**resolve_data_config(net.pretrained_cfg, model=net))
    clip_eval = open_clip.image_transform(33, is_train=False)
    for transform in (plain, timm_eval, clip_eval):
        assert split_tensor_tail(transform) is not None  # the tabled path, not the fallback
        want = torch.stack([transform(s.image) for s in samples])
        for memory_format in (None, torch.channels_last):
            got = ImageCollator(transform, memory_format)(samples)
            assert torch.equal(got, want) and got.dtype == want.dtype
            assert got.is_contiguous(memory_format=memory_format or torch.contiguous_format)
    # a transform with another ending runs whole, per sample
    unnormalised = T.Compose([T.Resize(19), T.CenterCrop(19), T.ToTensor()])
    assert split_tensor_tail(unnormalised) is None
    got = ImageCollator(unnormalised)(samples)
    assert torch.equal(got, torch.stack([unnormalised(s.image) for s in samples]))


def test_every_dataset_decodes_through_the_one_guard(tmp_path):
    thin = saved(Image.new("L", (60000, 1)), tmp_path / "thin.png").read_bytes()
    folder = make_folder(tmp_path, [{"file": "t.png", "caption": "thin"}], {"t.png": thin})
    with pytest.raises(BadImageError, match=r"sample 0 \(row 1, t.png\): extreme aspect"):
        get_dataset(str(folder))[0]
    pytest.importorskip("datasets")
    saved_wit = save_wit_like(tmp_path)
    import datasets

    rows = datasets.load_from_disk(str(saved_wit)).cast_column(
        "image", datasets.Image(decode=False)
    )
    rows = rows.map(lambda r, i: {"image": {"bytes": thin, "path": None}} if i == 1 else r,
                    with_indices=True)  # fmt: skip
    rows.save_to_disk(str(tmp_path / "hostile"))
    wit = get_dataset("wit_1024", path=str(tmp_path / "hostile"))
    assert wit[0].image.mode == "RGB"
    with pytest.raises(BadImageError, match=r"^wit_1024 sample 1: extreme aspect"):
        wit[1]


# --- hostile local folders: each class of bad input is one line naming the row -------------


def hostile_rows(folder: Path) -> dict[str, str]:
    """One bad row of each kind (file field -> the problem it must report); makes the files."""
    os.symlink("loop.png", folder / "loop.png")  # a link to itself
    (folder / "thin.png").write_bytes(png_header(60000, 1))
    (folder / "bomb.png").write_bytes(png_header(30000, 30000))
    Image.fromarray(gradient16()).save(folder / "sixteen.png")
    return {
        "loop.png": "a symlink loop",
        "a\x00b.png": "the file name contains a NUL byte",
        "x" * 5000 + ".png": "unusable path (File name too long)",
        "thin.png": "extreme aspect ratio",  # found at open with skip_bad, else when read
        "bomb.png": "decompression bomb",
    }


def test_local_hostile_paths_are_one_line_each(tmp_path):
    folder = make_folder(tmp_path, [], {"a.png": png_bytes("red")})
    for file, problem in hostile_rows(folder).items():
        if problem.startswith(("extreme", "decompression")):
            continue  # image problems: see the skip_bad test below
        (folder / "captions.jsonl").write_text(
            json.dumps({"file": "a.png", "caption": "red"}) + "\n"
            + json.dumps({"file": file, "caption": "bad"}) + "\n"
        )  # fmt: skip
        with pytest.raises(DatasetError) as err:
            get_dataset(str(folder))
        message = str(err.value)
        assert "row 2 (" in message and problem in message and "skip_bad" in message
        assert "\n" not in message and "\x00" not in message and len(message) < 400


def test_local_nul_in_a_csv_path_and_huge_captions(tmp_path):
    folder = tmp_path / "csvset"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes("red"))
    captions = folder / "captions.csv"
    captions.write_text("file,caption\na.png,red\na\x00b.png,nul\n")
    with pytest.raises(DatasetError, match=r"row 2 \(a\\x00b.png\): the file name contains a NUL"):
        get_dataset(str(folder))
    captions.write_text(f"file,caption\na.png,red\na.png,{'long ' * 4000}\n")  # 20,000 characters
    with pytest.raises(DatasetError, match=r"row 2 \(a.png\): a caption of 19,999 characters"):
        get_dataset(str(folder))
    captions.write_text(f'file,caption\na.png,red\na.png,"{"x" * 200_000}"\n')  # over csv's limit
    with pytest.raises(DatasetError) as err:
        get_dataset(str(folder))
    message = str(err.value)
    assert "captions.csv row 2: field larger than field limit" in message
    assert "quote" in message and "\n" not in message
    captions.write_text('file,caption\na.png,"an open quote\n' + "b.png,second row\n" * 30_000)
    with pytest.raises(DatasetError, match="left open"):
        get_dataset(str(folder))  # the quote swallows 480,000 characters: over csv's limit


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[" * 100_000, "not a JSON object (nested too deeply)"),
        ('{"file": "a.png", "caption": ' + "[" * 100_000, "nested too deeply"),
        ('{"file": "a.png", "n": ' + "9" * 5000 + "}", "not a JSON object (Exceeds the limit"),
    ],
)
def test_local_hostile_json_lines_are_one_line(tmp_path, line, problem):
    folder = make_folder(
        tmp_path, [{"file": "a.png", "caption": "red"}], {"a.png": png_bytes("red")}
    )
    with open(folder / "captions.jsonl", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DatasetError) as err:
        get_dataset(str(folder))
    assert "row 2" in str(err.value) and problem in str(err.value)


def test_local_folder_path_too_long_or_with_nul(tmp_path):
    with pytest.raises(DatasetError, match="cannot use the folder path .*File name too long"):
        get_dataset(f"local:{tmp_path / ('x' * 5000)}")
    with pytest.raises(DatasetError, match="does not exist"):
        get_dataset(f"local:{tmp_path}/a\x00b")


def test_local_skip_bad_leaves_out_every_hostile_row_in_one_warning(tmp_path, caplog):
    folder = make_folder(tmp_path, [], {"a.png": png_bytes("red"), "b.png": png_bytes("blue")})
    bad = hostile_rows(folder)
    rows = [{"file": "a.png", "caption": "red"}]
    rows += [{"file": f, "caption": "bad"} for f in bad]
    rows += [
        {"file": "sixteen.png", "caption": "a grey ramp"},
        {"file": "b.png", "caption": "blue"},
    ]
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="prh_bench.datasets"):
        ds = get_dataset(str(folder), skip_bad=True)
    assert ds.captions() == ["red", "a grey ramp", "blue"]
    assert len(ds.skipped) == len(bad)
    for skipped, problem in zip(ds.skipped, bad.values(), strict=True):
        assert problem in skipped
    [line] = [r.getMessage() for r in caplog.records]
    assert "skipped 5 bad row(s) of 8 (rows 2, 3, 4, 5, 6)" in line and "\n" not in line
    assert len(np.unique(np.asarray(ds[1].image))) == 256  # the 16-bit ramp is no bad row


def test_local_repeated_images_are_named_in_one_warning(tmp_path, caplog):
    red = png_bytes("red")
    files = {"a.png": red, "b.png": png_bytes("blue"), "copy.png": red}
    rows = [{"file": "a.png", "caption": "red"}, {"file": "b.png", "caption": "blue"},
            {"file": "copy.png", "caption": "red again"}, {"file": "a.png", "caption": "red 3"}]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="prh_bench.datasets"):
        ds = get_dataset(str(make_folder(tmp_path, rows, files)))
    assert len(ds) == 4 and ds.repeats == [(0, 2), (0, 3)]
    [line] = [r.getMessage() for r in caplog.records]
    assert "2 sample(s) repeat an earlier sample's image" in line
    assert "sample 2 (row 3, copy.png) repeats sample 0 (row 1, a.png)" in line
