"""Reads the HAM10000-format folder (images.tar + metadata.csv) without unpacking it."""

from __future__ import annotations

import csv
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MALIGNANT = ("mel", "bcc", "akiec")


@dataclass(frozen=True)
class Sample:
    image_id: str
    dx: str
    lesion_id: str
    split: str


def read_metadata(data_dir: Path) -> list[Sample]:
    with open(Path(data_dir) / "metadata.csv", newline="") as fh:
        return [
            Sample(row["image_id"], row["dx"], row.get("lesion_id", ""), row.get("split", ""))
            for row in csv.DictReader(fh)
        ]


def read_image_bytes(data_dir: Path, wanted: set[str] | None = None) -> dict[str, bytes]:
    """image_id -> JPEG bytes, read member by member from the tar."""
    out: dict[str, bytes] = {}
    with tarfile.open(Path(data_dir) / "images.tar") as tar:
        for member in tar:
            if not member.isfile():
                continue
            image_id = Path(member.name).stem
            if wanted is not None and image_id not in wanted:
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            out[image_id] = fh.read()
    return out


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
