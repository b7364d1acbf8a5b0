"""Classification metrics in plain numpy, shared by training, the evaluation command and benchmarks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

MALIGNANT_CLASSES = ("mel", "bcc", "akiec")

# The HAM10000 diagnostic categories in words (Tschandl et al., 2018): written into the model
# metadata at export, and what pages and exports fall back on for a model file without them.
CLASS_NAMES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}


def malignancy_risk(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Probability that the lesion is malignant or pre-malignant: mel + bcc + akiec."""
    idx = [list(classes).index(c) for c in MALIGNANT_CLASSES if c in classes]
    return probabilities[:, idx].sum(axis=1)


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney statistic, ties counted half."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-1 confidence over equal-width bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def summarise(
    labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], threshold: float | None = None
) -> dict:
    """Every figure the model card and the evaluation command report."""
    classes = list(classes)
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, len(classes))
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    tp = np.diag(matrix).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted_count > 0, tp / predicted_count, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    risk = malignancy_risk(probabilities, classes)
    malignant = np.isin(np.array(classes)[labels], MALIGNANT_CLASSES)
    result = {
        "n": len(labels),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.nanmean(recall[present])),
        "macro_f1": float(f1[present].mean()),
        "malignant_auc": roc_auc(malignant, risk),
        "ece": expected_calibration_error(labels, probabilities),
        "per_class": {
            c: {"support": int(support[i]), "precision": float(precision[i]), "recall": float(recall[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
    }
    if threshold is not None and "mel" in classes:
        is_mel = labels == classes.index("mel")
        alert = risk >= threshold
        result["threshold"] = float(threshold)
        result["melanoma_sensitivity"] = float(alert[is_mel].mean()) if is_mel.any() else float("nan")
        result["melanoma_specificity"] = float((~alert[~is_mel]).mean()) if (~is_mel).any() else float("nan")
        result["malignant_sensitivity"] = float(alert[malignant].mean()) if malignant.any() else float("nan")
        result["alert_rate"] = float(alert.mean())
    return result
