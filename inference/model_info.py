"""What the UI says about the model: name, version and measured validation performance.

Reads only the committed metadata JSON (no onnxruntime), so any page can show it.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

DEFAULT_METADATA = Path(__file__).resolve().parent / "models" / "lesion_classifier.json"


def metadata_path() -> Path:
    return Path(os.environ.get("DERMATRACK_MODEL_METADATA", DEFAULT_METADATA))


@functools.lru_cache(maxsize=1)
def current_model_info() -> dict | None:
    path = metadata_path()
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
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
    }
