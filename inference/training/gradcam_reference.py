"""Torch Grad-CAM reference for the numpy class activation maps of `inference.explanations`.

For a network ending in global average pooling + one linear layer, Grad-CAM on the last
feature map F (K x h x w) is proportional to the class activation map sum_k W[c, k] F[k]:
d logit_c / d F[k, i, j] = W[c, k] / (h w), so Grad-CAM's channel weights (the spatial mean of
the gradient) are W[c] / (h w). This script computes Grad-CAM with autograd on real
validation images, checks it against the numpy CAM of the same torch features, and stores
the image ids and the reference maps so that the test suite can check the runtime path (ONNX
features + the committed CAM weights + `inference.explanations`) against torch without
needing torch or the checkpoint. The images themselves stay in ../shared/data (never in the
repository); the test reads them from there by id:

    python -m inference.training.gradcam_reference                 # the committed model's checkpoint
    python -m inference.training.gradcam_reference --checkpoint artifacts/training/epoch12.pt

Writes tests/inference/data/gradcam_reference.json (about 15 KB for 4 images).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from inference.classifier import softmax
from inference.explanations import cam_from_features, cam_weights_digest, normalise_heatmap, risk_cam_weights
from inference.preprocessing import to_model_input
from inference.training.data import decode, read_image_bytes, read_metadata
from inference.training.network import EfficientNetLite0
from inference.training.train import CLASSES

DEFAULT_OUT = Path("tests/inference/data/gradcam_reference.json")
# One image of each of these classes: malignant and benign, pigmented and not.
DEFAULT_CLASSES = ("mel", "nv", "bcc", "bkl")


def gradcam(
    model: EfficientNetLite0,
    x: torch.Tensor,
    class_index: int | None,
    malignant: list[int] | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of one image (1 x 3 x H x W) on the last feature map:
    channel weights = spatial mean of d target / d F, map = ReLU(sum_k weight_k F_k), scaled to
    a peak of 1. The target is the logit of `class_index`, or with class_index=None the
    malignancy risk sum_{c in malignant} softmax(logits / temperature)_c. Returns h x w float32."""
    model.eval()
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(False)
        logits, fmap = model(x)
        fmap.retain_grad()
        model.zero_grad(set_to_none=True)
        if class_index is None:
            target = torch.softmax(logits[0] / temperature, dim=0)[malignant or []].sum()
        else:
            target = logits[0, class_index]
        target.backward()
        grads = fmap.grad[0]  # K x h x w
        alpha = grads.mean(dim=(1, 2))  # K
        cam = torch.relu((alpha[:, None, None] * fmap[0]).sum(dim=0))
    cam = cam.detach().numpy().astype(np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 else np.zeros_like(cam)


def pick_images(data_dir: Path, classes: tuple[str, ...], seed: int) -> list[tuple[str, str]]:
    """One validation image per requested class, by a seeded draw over sorted ids."""
    val = sorted((s for s in read_metadata(data_dir) if s.split == "val"), key=lambda s: s.image_id)
    rng = random.Random(seed)
    return [(rng.choice([s for s in val if s.dx == dx]).image_id, dx) for dx in classes]


def committed_checkpoint(metadata_path: Path, artifacts: Path) -> Path | None:
    """The checkpoint the committed model was exported from: named, with its SHA-256, in the
    model metadata; looked for in every training folder under `artifacts`."""
    if not metadata_path.is_file():
        return None
    training = json.loads(metadata_path.read_text()).get("training", {})
    name, sha = training.get("checkpoint"), training.get("checkpoint_sha256")
    if not name or not sha:
        return None
    for candidate in sorted(artifacts.glob(f"*/{name}")):
        if hashlib.sha256(candidate.read_bytes()).hexdigest() == sha:
            return candidate
    raise SystemExit(f"{metadata_path} was exported from {name} (sha256 {sha[:12]}...), not found under {artifacts}/")


def chosen_checkpoint(work: Path) -> Path:
    log = json.loads((work / "train_log.json").read_text())
    if "chosen_checkpoint" not in log:
        raise SystemExit(f"{work / 'train_log.json'} has no chosen_checkpoint yet (training still running?)")
    return work / log["chosen_checkpoint"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="torch state dict (default: the one the committed model's metadata names, found by its SHA-256 "
        "under artifacts/, else the chosen_checkpoint of <work>/train_log.json)",
    )
    parser.add_argument("--metadata", type=Path, default=Path("inference/models/lesion_classifier.json"))
    parser.add_argument("--work", type=Path, default=Path("artifacts/training"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES), help="one validation image of each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    checkpoint = (
        args.checkpoint or committed_checkpoint(args.metadata, args.work.parent) or chosen_checkpoint(args.work)
    )
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = EfficientNetLite0(num_classes=len(CLASSES))
    model.load_state_dict(state, strict=True)
    model.eval()
    weight = model._fc.weight.detach().numpy().astype(np.float32)

    meta = json.loads(args.metadata.read_text())
    raw_size = meta["input_size"]
    size = raw_size if isinstance(raw_size, int) else (int(raw_size[0]), int(raw_size[1]))
    colour_constancy = meta.get("colour_constancy") == "shades_of_gray"
    temperature = float(meta["temperature"])
    malignant = [CLASSES.index(c) for c in meta["malignant_classes"]]

    picked = pick_images(args.data, tuple(args.classes.split(",")), args.seed)
    raw = read_image_bytes(args.data, {image_id for image_id, _ in picked})
    images = [decode(raw[image_id]).convert("RGB") for image_id, _ in picked]

    gradcams, cams, all_logits, risk_gradcams, risk_cams = [], [], [], [], []
    for img in images:
        x = torch.from_numpy(to_model_input([img], size, colour_constancy))
        with torch.no_grad():
            logits, fmap = model(x)
        all_logits.append(logits[0].numpy())
        gradcams.append([gradcam(model, x, c) for c in range(len(CLASSES))])
        cams.append([normalise_heatmap(cam_from_features(fmap[0].numpy(), weight, c)) for c in range(len(CLASSES))])
        risk_gradcams.append(gradcam(model, x, None, malignant, temperature))
        w_risk = risk_cam_weights(softmax(logits.numpy(), temperature)[0], weight, malignant)
        risk_cams.append(normalise_heatmap(cam_from_features(fmap[0].numpy(), w_risk[None], 0)))
    risk_gap = float(np.abs(np.asarray(risk_gradcams) - np.asarray(risk_cams)).max())
    print(f"torch Grad-CAM of the malignancy risk vs numpy risk CAM: max |diff| = {risk_gap:.2e}")
    if risk_gap > 1e-4:
        raise SystemExit("Grad-CAM of the risk and risk_cam_weights disagree")
    gradcams_a = np.asarray(gradcams, dtype=np.float32)
    cams_a = np.asarray(cams, dtype=np.float32)
    gap = float(np.abs(gradcams_a - cams_a).max())
    print(f"torch Grad-CAM vs numpy CAM on the same torch features: max |diff| = {gap:.2e}  (maps {gradcams_a.shape})")
    if gap > 1e-4:
        raise SystemExit("Grad-CAM and CAM disagree: the network no longer ends in GAP + linear?")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    reference = {
        "image_ids": [i for i, _ in picked],
        "dx": [d for _, d in picked],
        "input_size": size,
        "colour_constancy": colour_constancy,
        "temperature": temperature,
        "gradcam_risk": np.round(np.asarray(risk_gradcams, dtype=np.float32), 7).tolist(),  # N x h x w
        "classes": list(CLASSES),
        "gradcam": np.round(gradcams_a, 7).tolist(),  # N x C x h x w, torch autograd Grad-CAM, peak 1
        "logits": np.round(np.asarray(all_logits, dtype=np.float32), 6).tolist(),  # N x C, torch fp32
        "fc_weight_sha256": cam_weights_digest(weight),
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
    }
    args.out.write_text(json.dumps(reference, indent=1) + "\n")
    for (image_id, dx), logits in zip(picked, all_logits, strict=False):
        print(f"  {image_id} {dx:5s} predicted {CLASSES[int(np.argmax(logits))]}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) from {checkpoint}")
    return args.out


if __name__ == "__main__":
    main()
