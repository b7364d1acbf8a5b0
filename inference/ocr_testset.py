"""Generates the OCR test set: record numbers, names and dates rendered onto real lesion images.

Never hand-made, never committed: the images are written to an output folder (default
`var/ocr_testset/`, git-ignored) with a `manifest.json` that holds the ground truth.

    python -m inference.ocr_testset --data ../shared/data/ham10000 --count 150 --unlabeled 100 --out var/ocr_testset

Two styles, as clinics produce them:

- `label`: a printed sticker next to the lesion (white or off-white box, dark text, a thin
  border), lines: record number, then optionally a name and a date;
- `overlay`: text burnt into the picture by the camera or a viewer (white or yellow, with a
  dark drop shadow), record number and optionally a date.

Per image: one of the Debian fonts found on the machine (fonts-dejavu-core, fonts-liberation,
fonts-freefont-ttf), a text size of 10-40 px, a rotation of ±15°, a Gaussian blur of 0-1.2 px and
a JPEG quality of 40-90. The source photographs (200 x 150 in our data set) are enlarged by
`--scale` (default 2, i.e. 400 x 300, still smaller than the 600 x 450 originals) before the text
is drawn, so that a 40 px label fits beside the lesion, as on a full-size dermatoscope picture.
Deterministic: the same seed and sources give byte-identical files (checked by a test).

The unlabeled part copies real images unchanged (the same scale and JPEG encoding as the rest, no
text added): on those any text read is a false positive (rulers and dermoscope scales are common).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import string
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Debian packages: fonts-dejavu-core, fonts-liberation, fonts-freefont-ttf.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/freefont/FreeMono.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSerifBold.ttf",
)

FIRST_NAMES = ("Anna", "Jonas", "Lena", "Marta", "Paul", "Sofia", "Tomas", "Eva", "Ole", "Ines", "Karl", "Mia")
LAST_NAMES = ("Huber", "Wagner", "Novak", "Berg", "Lindqvist", "Moreau", "Keller", "Ricci", "Schmid", "Olsen")


def available_fonts(candidates: Sequence[str] = FONT_CANDIDATES) -> list[str]:
    fonts = [p for p in candidates if Path(p).is_file()]
    if not fonts:
        raise RuntimeError(
            "no Debian font found: apt-get install fonts-dejavu-core fonts-liberation fonts-freefont-ttf"
        )
    return fonts


def record_number(rng: random.Random) -> str:
    """A record number in the shape of the project's MRNs ("DT-1001", "QH-4711"): 2-3 capital
    letters, a dash, 4-6 digits."""
    prefix = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.choice((2, 2, 3))))
    digits = "".join(rng.choice(string.digits) for _ in range(rng.choice((4, 4, 5, 6))))
    return f"{prefix}-{digits}"


def _date(rng: random.Random) -> str:
    y, m, d = rng.randint(2015, 2026), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice((f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{d:02d}/{m:02d}/{y}"))


def _text_block(lines: list[str], font: ImageFont.FreeTypeFont, style: str, rng: random.Random) -> Image.Image:
    """The text on a transparent layer (label: with its sticker box), before rotation."""
    size = int(font.size)
    pad = max(2, int(size * 0.35)) if style == "label" else 2
    spacing = max(1, size // 5)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [probe.textbbox((0, 0), line, font=font) for line in lines]
    width = int(max(b[2] - b[0] for b in boxes)) + 2 * pad + 2
    height = int(sum(b[3] - b[1] for b in boxes)) + spacing * (len(lines) - 1) + 2 * pad + 2
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if style == "label":
        paper = rng.choice(((255, 255, 255), (250, 248, 240), (244, 244, 236)))
        ink = rng.choice(((0, 0, 0), (30, 30, 30), (20, 30, 80)))
        draw.rectangle((0, 0, width - 1, height - 1), fill=(*paper, 255), outline=(120, 120, 120, 255))
    else:
        ink = rng.choice(((255, 255, 255), (255, 235, 60), (240, 240, 240)))
    y = pad
    for line, box in zip(lines, boxes, strict=True):
        if style == "overlay":
            off = max(1, size // 12)
            draw.text((pad - box[0] + off, y - box[1] + off), line, font=font, fill=(0, 0, 0, 220))
        draw.text((pad - box[0], y - box[1]), line, font=font, fill=(*ink, 255))
        y += int(box[3] - box[1]) + spacing
    return layer


def render(
    source: Image.Image, rng: random.Random, fonts: Sequence[str], *, scale: int = 2
) -> tuple[Image.Image, dict]:
    """One labelled image and its ground truth (everything but the file names)."""
    base = source.convert("RGB")
    base = base.resize((base.width * scale, base.height * scale), Image.Resampling.BICUBIC)
    style = rng.choice(("label", "overlay"))
    number = record_number(rng)
    lines = [number]
    if style == "label":
        if rng.random() < 0.7:
            lines.append(f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}")
        if rng.random() < 0.6:
            lines.append(_date(rng))
    elif rng.random() < 0.5:
        lines.append(_date(rng))
    if style == "overlay":
        rng.shuffle(lines)
    font_path = rng.choice(list(fonts))
    size = rng.randint(10, 40)
    angle = round(rng.uniform(-15, 15), 1)
    blur = round(rng.choice((0.0, 0.0, rng.uniform(0.3, 1.2))), 2)
    quality = rng.randint(40, 90)
    # Shrink the text until the rotated block fits in the picture (a 40 px, 3-line label may not).
    while True:
        font = ImageFont.truetype(font_path, size)
        block = _text_block(lines, font, style, rng).rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
        if (block.width <= base.width - 4 and block.height <= base.height - 4) or size <= 10:
            break
        size -= 2
    x = rng.randint(0, max(0, base.width - block.width))
    y = rng.choice((rng.randint(0, max(0, base.height // 4 - block.height // 2)), max(0, base.height - block.height)))
    y = min(max(0, y), max(0, base.height - block.height))
    base.paste(block, (x, y), block)
    if blur:
        base = base.filter(ImageFilter.GaussianBlur(blur))
    truth = {
        "style": style,
        "record_number": number,
        "lines": lines,
        "font": Path(font_path).name,
        "size": size,
        "angle": angle,
        "blur": blur,
        "quality": quality,
        "box": [x, y, x + block.width, y + block.height],
    }
    return base, truth


def label_image(
    image: Image.Image,
    lines: Sequence[str],
    *,
    style: str = "label",
    size: int = 24,
    angle: float = 0.0,
    font: str | None = None,
    position: tuple[int, int] = (8, 8),
) -> Image.Image:
    """A copy of `image` with the given lines drawn on it in one style (for tests and demos:
    a chosen record number on a printed label)."""
    out = image.convert("RGB")
    typeface = ImageFont.truetype(font or available_fonts()[0], size)
    block = _text_block(list(lines), typeface, style, random.Random(0))
    block = block.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    out.paste(block, position, block)
    return out


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
    return buf.getvalue()


def generate(
    sources: Iterable[tuple[str, Image.Image]],
    out_dir: Path,
    *,
    count: int,
    unlabeled: int,
    seed: int = 0,
    scale: int = 2,
    fonts: Sequence[str] | None = None,
) -> list[dict]:
    """Writes `count` labelled and `unlabeled` plain images and `manifest.json`; returns the manifest.
    `sources` gives (name, image) pairs; labelled images take the first `count`, unlabeled the next."""
    fonts = list(fonts or available_fonts())
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: list[dict] = []
    it = iter(sources)
    for i in range(count + unlabeled):
        try:
            name, image = next(it)
        except StopIteration:
            break
        if i < count:
            picture, truth = render(image, rng, fonts, scale=scale)
            file = f"label_{i:04d}.jpg"
        else:
            base = image.convert("RGB")
            picture = base.resize((base.width * scale, base.height * scale), Image.Resampling.BICUBIC)
            q = rng.randint(40, 90)
            truth = {"style": "none", "record_number": "", "lines": [], "font": "", "size": 0}
            truth.update({"angle": 0.0, "blur": 0.0, "quality": q, "box": None})
            file = f"plain_{i - count:04d}.jpg"
        data = _jpeg(picture, truth["quality"])
        (out_dir / file).write_bytes(data)
        manifest.append({"file": file, "source": name, "sha256": hashlib.sha256(data).hexdigest(), **truth})
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def data_set_sources(data_dir: Path, *, split: str = "val", seed: int = 0) -> Iterable[tuple[str, Image.Image]]:
    """Real images of the HAM10000-format folder, in a seeded shuffled order of one split."""
    from inference.evaluation import read_images, read_metadata_rows

    rows = read_metadata_rows(Path(data_dir), split=split)
    ids = sorted(r["image_id"] for r in rows)
    random.Random(seed).shuffle(ids)
    chunk = 64
    for start in range(0, len(ids), chunk):
        wanted = ids[start : start + chunk]
        blobs = read_images(Path(data_dir), wanted)
        for image_id in wanted:
            image = Image.open(io.BytesIO(blobs[image_id]))
            image.load()
            yield image_id, image


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--count", type=int, default=150, help="labelled images")
    parser.add_argument("--unlabeled", type=int, default=100, help="real images without text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("var/ocr_testset"))
    args = parser.parse_args(argv)
    manifest = generate(
        data_set_sources(args.data, split=args.split, seed=args.seed),
        args.out,
        count=args.count,
        unlabeled=args.unlabeled,
        seed=args.seed,
        scale=args.scale,
    )
    labelled = sum(1 for m in manifest if m["record_number"])
    print(f"wrote {labelled} labelled and {len(manifest) - labelled} unlabeled images to {args.out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
