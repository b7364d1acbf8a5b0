"""Runtime lesion classifier: the committed ONNX model behind a small, torch-free API.

Used by the portal, the `evaluate_model` command and the benchmarks. Needs only numpy,
onnxruntime and Pillow (no torch, no Django). The model and its metadata are produced by
`python -m inference.training.build`; at load time the SHA-256 of the ONNX file and of the
class-activation-map weights are checked against the metadata, so a portal can never run a
model whose calibration, threshold and validation figures belong to another file.

    from inference.classifier import get_classifier
    clf = get_classifier(model_dir)            # the folder that holds lesion_classifier.json
    probs = clf.predict([pil_image])          # N x C calibrated probabilities
    risk = clf.malignancy_risk(probs)         # P(mel) + P(bcc) + P(akiec)
    alert = risk >= clf.alert_threshold
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from inference import preprocessing

MODELS_DIR = Path(__file__).resolve().parent / "models"
METADATA_FILE = "lesion_classifier.json"
DEFAULT_METADATA = MODELS_DIR / METADATA_FILE
THREADS_ENV = "DERMATRACK_ORT_THREADS"
DEFAULT_THREADS = 2

INPUT_NAME = "image"
LOGITS_NAME = "logits"
FEATURES_NAME = "features"


class ModelLoadError(RuntimeError):
    """The model or its metadata is missing, unreadable or does not match its recorded hash."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _threads_from_env() -> int:
    raw = os.environ.get(THREADS_ENV, "")
    if not raw:
        return DEFAULT_THREADS
    try:
        value = int(raw)
    except ValueError as exc:
        raise ModelLoadError(f"{THREADS_ENV}={raw!r} is not an integer") from exc
    if value < 0:
        raise ModelLoadError(f"{THREADS_ENV}={raw!r} must be >= 0 (0 lets onnxruntime choose)")
    return value


def read_metadata(path: str | os.PathLike) -> dict:
    """The model's metadata JSON: the one loader, for the classifier and for what pages show."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model metadata file {path} is missing") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model metadata file {path} cannot be read: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"model metadata file {path} is not a JSON object")
    return meta


def _verified_file(base: Path, name: object, expected_sha: object, what: str, metadata_path: Path) -> Path:
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{metadata_path}: no {what} file named in the metadata")
    path = base / name
    if not path.is_file():
        raise ModelLoadError(f"{what} file {path} is missing (named in {metadata_path})")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise ModelLoadError(
            f"{what} file {path} does not match its metadata {metadata_path}: "
            f"sha256 is {actual}, expected {expected_sha}. Re-run the export "
            "(python -m inference.training.build) or restore the committed file."
        )
    return path


class LesionClassifier:
    """The ONNX lesion classifier plus its calibration, threshold and CAM weights."""

    def __init__(self, metadata_path: str | os.PathLike | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort  # imported here so that importing this module stays cheap

        self.metadata_path = Path(metadata_path) if metadata_path is not None else DEFAULT_METADATA
        meta = read_metadata(self.metadata_path)
        self.metadata = meta
        base = self.metadata_path.parent
        try:
            self.name: str = meta["name"]
            self.version: str = meta["version"]
            self.sha256: str = meta["sha256"]
            self.classes: list[str] = list(meta["classes"])
            raw_size = meta["input_size"]
            # An int is a square input (model 1); a [width, height] pair keeps the photograph's shape.
            self.input_size: preprocessing.Size = (
                int(raw_size) if isinstance(raw_size, int) else (int(raw_size[0]), int(raw_size[1]))
            )
            # Shades-of-Gray colour constancy, for models trained with it (model 2 on).
            self.colour_constancy: bool = meta.get("colour_constancy") == "shades_of_gray"
            # Test-time augmentation: the mean logits of the views that keep the input's shape
            # (4 flips for 4:3, 8 dihedral views for a square); calibration and threshold were
            # fitted on those mean logits, so the metadata decides, not the caller.
            self.tta: str = str(meta.get("tta", "none"))
            self.temperature: float = float(meta["temperature"])
            self.alert_threshold: float = float(meta["alert_threshold"])
            self.malignant_classes: list[str] = list(meta["malignant_classes"])
            onnx_name, cam_name, cam_sha = meta["onnx_file"], meta["cam_file"], meta["cam_sha256"]
            resize, norm = meta["resize"], meta["normalisation"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"model metadata file {self.metadata_path} lacks or mangles {exc}") from exc

        # The preprocessing is code, not configuration: refuse a model trained with another one.
        if (
            resize != "squash"
            or float(norm["mean"]) != preprocessing.PIXEL_MEAN
            or float(norm["scale"]) != preprocessing.PIXEL_SCALE
        ):
            raise ModelLoadError(
                f"{self.metadata_path}: model expects resize={resize!r}, normalisation={norm!r}, but "
                f"inference.preprocessing does squash and (x - {preprocessing.PIXEL_MEAN}) / "
                f"{preprocessing.PIXEL_SCALE}"
            )
        if not self.temperature > 0:
            raise ModelLoadError(f"{self.metadata_path}: temperature must be positive, got {self.temperature}")
        unknown = [c for c in self.malignant_classes if c not in self.classes]
        if unknown:
            raise ModelLoadError(f"{self.metadata_path}: malignant classes {unknown} are not model classes")

        self.onnx_path = _verified_file(base, onnx_name, self.sha256, "ONNX model", self.metadata_path)
        self.cam_path = _verified_file(base, cam_name, cam_sha, "CAM weights", self.metadata_path)
        cam = np.load(self.cam_path, allow_pickle=False)  # C x (K + 1): weights, then bias
        self.cam_weights: np.ndarray = np.ascontiguousarray(cam[:, :-1], dtype=np.float32)
        self.cam_bias: np.ndarray = np.ascontiguousarray(cam[:, -1], dtype=np.float32)
        if self.cam_weights.shape[0] != len(self.classes) or self.cam_bias.shape != (len(self.classes),):
            raise ModelLoadError(
                f"{self.cam_path}: CAM weights {self.cam_weights.shape} / bias {self.cam_bias.shape} "
                f"do not fit {len(self.classes)} classes"
            )

        self.threads = _threads_from_env() if threads is None else int(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime cannot load {self.onnx_path}: {exc}") from exc
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or not {LOGITS_NAME, FEATURES_NAME} <= set(outputs):
            raise ModelLoadError(
                f"{self.onnx_path}: expected input {INPUT_NAME!r} and outputs {LOGITS_NAME!r}, {FEATURES_NAME!r}; "
                f"found inputs {inputs} and outputs {outputs}"
            )

    def __repr__(self) -> str:
        return f"<LesionClassifier {self.name} {self.version} sha256={self.sha256[:12]} T={self.temperature:.3f}>"

    @property
    def malignant_indices(self) -> list[int]:
        return [self.classes.index(c) for c in self.malignant_classes]

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> the model's float32 NCHW input (EXIF orientation, RGB, squash, normalise)."""
        return preprocessing.to_model_input(images, self.input_size, self.colour_constancy)

    def model_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels already at the input size (N x H x W x 3) -> the model's NCHW input."""
        return np.ascontiguousarray(preprocessing.model_pixels(pixels, self.colour_constancy).transpose(0, 3, 1, 2))

    @property
    def input_wh(self) -> tuple[int, int]:
        return preprocessing.input_wh(self.input_size)

    def predict_arrays(self, batch: np.ndarray, tta: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Preprocessed N x 3 x H x W float32 -> (calibrated probabilities, logits, feature maps).

        With test-time augmentation (the model's metadata decides; `tta=False` forces a single
        view) the logits are the mean over the views; the feature maps are the unflipped view's,
        so a CAM lies over the image as it is."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        width, height = self.input_wh
        expected = (3, height, width)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"expected an N x {' x '.join(map(str, expected))} batch, got shape {batch.shape}")
        use_tta = self.tta != "none" if tta is None else (tta and self.tta != "none")
        if not use_tta or len(batch) == 0:
            logits, features = self.session.run([LOGITS_NAME, FEATURES_NAME], {INPUT_NAME: batch})
            return softmax(logits, self.temperature), logits, features
        views = tta_views(batch, self.tta)
        logits, features = self.session.run([LOGITS_NAME, FEATURES_NAME], {INPUT_NAME: views})
        n = len(batch)
        mean_logits = logits.reshape(-1, n, logits.shape[1]).mean(axis=0)
        return softmax(mean_logits, self.temperature), mean_logits, features[:n]

    def predict(self, images: Sequence[Image.Image]) -> np.ndarray:
        """N x C calibrated class probabilities, columns in `self.classes` order."""
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        probabilities, _, _ = self.predict_arrays(self.preprocess(images))
        return probabilities

    def malignancy_risk(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated P(mel) + P(bcc) + P(akiec) per row."""
        return np.asarray(probabilities)[:, self.malignant_indices].sum(axis=1)


def tta_views(batch: np.ndarray, kind: str) -> np.ndarray:
    """V*N x 3 x H x W: the views of an N x 3 x H x W batch, view-major, the identity first.

    "flips": identity, left-right, up-down, both (= 180 degrees) - the dihedral views that keep
    a 4:3 input 4:3. "dihedral": those and their transposes (square inputs only)."""
    views = [batch, batch[..., ::-1], batch[..., ::-1, :], batch[..., ::-1, ::-1]]
    if kind == "dihedral":
        views += [v.swapaxes(-1, -2) for v in views]
    elif kind != "flips":
        raise ValueError(f"unknown test-time augmentation {kind!r}")
    return np.ascontiguousarray(np.concatenate(views))


def default_metadata_path() -> Path:
    """The committed model's metadata (tests, benchmarks and the command line use it)."""
    return DEFAULT_METADATA


def metadata_path_in(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / METADATA_FILE


@lru_cache(maxsize=2)
def get_classifier(model_dir: str | os.PathLike = MODELS_DIR) -> LesionClassifier:
    """The process-wide classifier of one model folder, loaded on first use."""
    return LesionClassifier(metadata_path_in(model_dir))


@lru_cache(maxsize=2)
def model_info(model_dir: str | os.PathLike = MODELS_DIR) -> dict | None:
    """What pages say about the model (name, version, validation figures, alert threshold);
    metadata only, no onnxruntime. None when the folder has no model."""
    path = metadata_path_in(model_dir)
    if not path.exists():
        return None
    meta = read_metadata(path)
    metrics = meta.get("metrics", {}).get("validation", meta.get("validation_metrics", {})) or {}
    return {
        "name": meta.get("name", "lesion classifier"),
        "version": meta.get("version", "?"),
        "balanced_accuracy": metrics.get("balanced_accuracy"),
        "malignant_auc": metrics.get("malignant_auc"),
        "melanoma_sensitivity": metrics.get("melanoma_sensitivity"),
        "melanoma_specificity": metrics.get("melanoma_specificity"),
        "alert_threshold": meta.get("alert_threshold"),
        "classes": meta.get("classes", []),
        "class_names": meta.get("class_names", {}),
    }
