"""Shared helpers for the classifier and evaluation tests: real validation images, a copy of the model."""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
from pathlib import Path

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def require_data() -> Path:
    from tests.conftest import require_data_set

    return require_data_set()


def validation_images(per_class: int) -> list[tuple[str, str, bytes]]:
    """The first `per_class` validation images of each class by image_id: (image_id, dx, JPEG bytes)."""
    data_dir = require_data()
    with open(data_dir / "metadata.csv", newline="") as fh:
        rows = sorted((r for r in csv.DictReader(fh) if r["split"] == "val"), key=lambda r: r["image_id"])
    chosen: list[dict] = []
    for dx in CLASSES:
        chosen += [r for r in rows if r["dx"] == dx][:per_class]
    wanted = {r["image_id"] for r in chosen}
    blobs: dict[str, bytes] = {}
    with tarfile.open(data_dir / "images.tar") as tar:
        for member in tar:
            stem = Path(member.name).stem
            if stem in wanted:
                blobs[stem] = tar.extractfile(member).read()
                if len(blobs) == len(wanted):
                    break
    return [(r["image_id"], r["dx"], blobs[r["image_id"]]) for r in chosen]


def write_folder(folder: Path, items: list[tuple[str, str, bytes]], splits: list[str] | None = None) -> Path:
    """A HAM10000-format folder: images.tar (<image_id>.jpg members) and metadata.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "images.tar", "w") as tar:
        for image_id, _, data in items:
            info = tarfile.TarInfo(f"{image_id}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(folder / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "dx"] + (["split"] if splits is not None else []))
        for i, (image_id, dx, _) in enumerate(items):
            writer.writerow([image_id, dx] + ([splits[i]] if splits is not None else []))
    return folder


def copy_model(metadata_path: Path, target: Path) -> Path:
    """Copies metadata, ONNX model and CAM weights into `target`; returns the copied metadata path."""
    import json

    meta = json.loads(metadata_path.read_text())
    target.mkdir(parents=True, exist_ok=True)
    for name in (metadata_path.name, meta["onnx_file"], meta["cam_file"]):
        shutil.copyfile(metadata_path.parent / name, target / name)
    return target / metadata_path.name
