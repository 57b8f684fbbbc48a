"""Build the embedded ``openclipart-1024`` dataset from Debian's openclipart-svg package.

Run it where the build tools are installed (they are NOT needed to use the dataset)::

    apt-get update
    apt-get install -y openclipart-svg librsvg2-bin wamerican
    python scripts/build_openclipart.py            # writes plugins/data/openclipart-1024/

Selection is deterministic: every drawing's metadata (``<dc:title>``, ``<dc:description>``,
directory path) is read, generic or machine titles and whole series (stars, arrows, patterns,
flags, cards, icon themes...) are dropped, near-duplicate titles keep only their first
drawing, and the survivors are taken round-robin over the top-level categories, each
category in a fixed hash order, until 1,024 drawings have rendered to a non-blank image.
Each drawing is rendered with rsvg-convert to fit 224 x 224, centred on white, and stored
as PNG inside one zip next to ``samples.jsonl`` (captions, titles, categories, sources).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image

SVG_ROOT = Path("/usr/share/openclipart/svg")
WORDS_FILE = Path("/usr/share/dict/american-english")
OUT_DIR = Path(__file__).resolve().parent.parent / "plugins" / "data" / "openclipart-1024"
SIZE = 224
COUNT = 1024
#: every zip entry gets this timestamp so that a rebuild gives identical bytes
ZIP_DATE = (2020, 7, 6, 0, 0, 0)

# Whole series whose titles are machine-made or whose drawings differ only in a parameter.
EXCLUDED_DIRS = (
    "shapes/stars",
    "shapes/arrows",
    "shapes/jigsaw",
    "shapes/flowchart",
    "shapes/callouts",
    "special/patterns",
    "special/gradients",
    "special/examples",
    "signs_and_symbols/flags",
    "signs_and_symbols/led",
    "recreation/games/cards",
    "computer/icons",
    "computer/buttons",
    "unsorted/duplicates",
    "transportation/aiga-symbols",
)
# Titles that name a collection, a theme or an author rather than the drawing.
GENERIC_TITLE = re.compile(
    r"clipart by|gramastar|collection|theme|icons?\b|iconset|\bsvg\b|various|"
    r"aiga|submission|sibmission|\bmaps?\b|map symbols|advertising|untitled|"
    r"^(people|card|clipart|clip art|drawing|image|picture|symbol|new|test|object)$",
    re.IGNORECASE,
)
# Series named in the issue: patterns, arrows, stars, flags and cards.
# Descriptions about how the file was made, not about what it shows.
META_DESC = re.compile(
    r"inkscape|tutorial|derived|traced|designed|made with|clip ?art|image|drawing|version|"
    r"based on|scanned|photo|\bsvg\b|\bpng\b|\bi\b|\bmy\b",
    re.IGNORECASE,
)
STOP_WORDS = {"the", "and", "with", "for", "this", "that", "its", "are", "has", "symbol"}
SERIES_WORD = re.compile(r"\b(patterns?|arrows?|stars?|flags?|cards?)\b", re.IGNORECASE)


def dc_field(work: str, tag: str) -> str:
    m = re.search(rf"<dc:{tag}>\s*(.*?)\s*</dc:{tag}>", work, re.S)
    if not m or "<" in m.group(1):  # a nested element (creator agents) is not a plain field
        return ""
    return " ".join(html.unescape(html.unescape(m.group(1))).split())  # some are escaped twice


def read_metadata(path: Path) -> tuple[str, str]:
    """(title, description) from the SVG's RDF ``cc:Work``; empty strings when absent."""
    text = path.read_bytes().decode("utf-8", "replace")
    m = re.search(r"<cc:Work.*?</cc:Work>", text, re.S)
    work = m.group(0) if m else ""
    return dc_field(work, "title"), dc_field(work, "description")


def clean_title(title: str) -> str:
    """The title as written, minus file-name debris: underscores, trailing version numbers."""
    t = title.replace("_", " ").strip()
    t = re.sub(r"(?<=[A-Za-z])[-\s]?\d+[a-z]?$", "", t)  # "guitar1", "handphone 2"
    t = re.sub(r"\s+", " ", t).strip(" -.,:")
    return t[:1].upper() + t[1:] if t else t


def english_share(text: str, words: set[str]) -> float:
    tokens = [w.lower() for w in re.findall(r"[A-Za-z]+", text) if len(w) >= 3]
    if not tokens:
        return 0.0

    def known(w: str) -> bool:
        stems = [w]
        if w.endswith("s"):
            stems += [w[:-1], w[:-2]]  # plurals: "cups", "boxes"
        if w.endswith(("ed", "ing")):
            stems += [w[:-2], w[:-1], w[:-3]]  # "painted", "raised", "running"
        return any(s in words for s in stems)

    return sum(known(w) for w in tokens) / len(tokens)


def clean_description(desc: str, title: str, words: set[str]) -> str:
    """A description's first sentence when it adds information to the title, else ''."""
    if not desc or "http" in desc.lower() or "@" in desc:
        return ""
    first = re.split(r"(?<=[.!?])\s", desc, maxsplit=1)[0].strip()
    if len(first) > 160:
        return ""
    norm = re.sub(r"[^a-z]", "", first.lower())
    if len(norm) < 8 or norm in re.sub(r"[^a-z]", "", title.lower()):
        return ""
    if english_share(first, words) < 0.8 or GENERIC_TITLE.search(first) or META_DESC.search(first):
        return ""
    title_words = {w.lower().rstrip("s") for w in re.findall(r"[A-Za-z]+", title)}
    new = [w for w in re.findall(r"[A-Za-z]+", first) if len(w) > 2]
    if not [w for w in new if w.lower().rstrip("s") not in title_words | STOP_WORDS]:
        return ""  # "Mug. A mug." restates the title
    first = first[:1].upper() + first[1:]
    return first if first.endswith((".", "!", "?")) else first + "."


def caption_of(title: str, description: str) -> str:
    return f"{title}. {description}" if description else title


def candidates(words: set[str]) -> tuple[list[dict], Counter]:
    dropped: Counter = Counter()
    seen_titles: set[str] = set()
    out = []
    for path in sorted(SVG_ROOT.rglob("*.svg")):
        rel = path.relative_to(SVG_ROOT).as_posix()
        if path.is_symlink():
            dropped["symlink (same drawing twice)"] += 1
            continue
        if rel.startswith(EXCLUDED_DIRS):
            dropped["excluded series directory"] += 1
            continue
        raw_title, raw_desc = read_metadata(path)
        title = clean_title(raw_title)
        if not title or GENERIC_TITLE.search(title) or GENERIC_TITLE.search(raw_title):
            dropped["generic or machine title"] += 1
            continue
        if SERIES_WORD.search(title):
            dropped["pattern/arrow/star/flag/card title"] += 1
            continue
        letters = sum(c.isalpha() for c in title)
        if letters < 3 or letters < 0.7 * len(title.replace(" ", "")):
            dropped["title is not words"] += 1
            continue
        if english_share(title, words) < 0.5:
            dropped["title not English"] += 1
            continue
        key = re.sub(r"[^a-z]", "", title.lower())
        if key in seen_titles:
            dropped["duplicate title"] += 1
            continue
        seen_titles.add(key)
        category = str(Path(rel).parent.as_posix())
        description = clean_description(raw_desc, title, words)
        out.append(
            {
                "source": rel,
                "category": category,
                "title": title,
                "description": description,
                "caption": caption_of(title, description),
            }
        )
    return out, dropped


def round_robin(items: list[dict]) -> list[dict]:
    """Top-level categories take turns; inside one, a fixed hash order (no alphabet bias)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        groups[item["category"].split("/")[0]].append(item)
    for group in groups.values():
        group.sort(key=lambda x: hashlib.sha256(x["source"].encode()).hexdigest())
    order = []
    for i in range(max(len(g) for g in groups.values())):
        for name in sorted(groups):
            if i < len(groups[name]):
                order.append(groups[name][i])
    return order


def render(svg: Path) -> bytes | None:
    """PNG bytes of the drawing fitted into SIZE x SIZE on white, or None if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.png"
        cmd = ["rsvg-convert", "--keep-aspect-ratio", "-w", str(SIZE), "-h", str(SIZE),
               "-b", "white", "-o", str(out), str(svg)]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
            img = Image.open(out)
            img.load()
        except (subprocess.SubprocessError, OSError):
            return None
    img = img.convert("RGBA")
    canvas = Image.new("RGB", (SIZE, SIZE), "white")
    canvas.paste(img, ((SIZE - img.width) // 2, (SIZE - img.height) // 2), img)
    gray = canvas.convert("L")
    inked = sum(gray.histogram()[:240])  # pixels clearly darker than the background
    if inked < 0.01 * SIZE * SIZE or min(img.size) < 16:
        return None  # blank, almost blank, or a sliver
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_words() -> set[str]:
    """Lower-case dictionary words only: proper nouns ("Torta", "Viti") do not make English."""
    lines = WORDS_FILE.read_text(errors="replace").splitlines()
    return {w.strip() for w in lines if w.strip().islower() and "'" not in w}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if not SVG_ROOT.is_dir() or not WORDS_FILE.is_file():
        print("needs: apt-get install openclipart-svg librsvg2-bin wamerican", file=sys.stderr)
        return 2
    words = read_words()
    items, dropped = candidates(words)
    chosen, failed = [], 0
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_STORED) as zf:
        for item in round_robin(items):
            png = render(SVG_ROOT / item["source"])
            if png is None:
                failed += 1
                continue
            index = len(chosen)
            name = f"{index:04d}.png"
            zf.writestr(zipfile.ZipInfo(name, ZIP_DATE), png)
            chosen.append({"sample_id": f"openclipart-{index:04d}", "file": name, **item,
                           "sha256": hashlib.sha256(png).hexdigest()})  # fmt: skip
            if len(chosen) == COUNT:
                break
    if len(chosen) < COUNT:
        print(f"only {len(chosen)} drawings rendered; need {COUNT}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "images.zip", zbuf.getvalue())
    lines = "".join(json.dumps(c, ensure_ascii=False, sort_keys=True) + "\n" for c in chosen)
    write_atomic(args.out / "samples.jsonl", lines.encode())
    per_top = Counter(c["category"].split("/")[0] for c in chosen)
    print(f"candidates: {len(items)}; dropped: {dict(dropped)}; render failures: {failed}")
    print(f"chosen: {len(chosen)} from {len({c['category'] for c in chosen})} category paths")
    print("per top-level category:", dict(sorted(per_top.items())))
    print(f"with description: {sum(bool(c['description']) for c in chosen)}")
    print(f"images.zip: {len(zbuf.getvalue()) / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
