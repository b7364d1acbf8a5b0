"""Computing and storing explanations for examinations (the write side; tasks call this)."""

from __future__ import annotations

import io
import logging
import time

from django.core.files.base import ContentFile
from django.db import transaction
from PIL import Image

from inference import explanations
from lesions import risk
from lesions.models import Examination, Explanation

logger = logging.getLogger(__name__)

DISPLAY_LONG_SIDE = 1024  # overlays are stored at the size the page shows, not at camera size


class ExplanationFailed(Exception):
    pass


def _display_image(exam: Examination) -> Image.Image:
    try:
        with exam.image.open("rb") as fh:
            image: Image.Image = Image.open(io.BytesIO(fh.read()))
            image.load()
    except (FileNotFoundError, OSError) as exc:
        raise ExplanationFailed("The stored image could not be read.") from exc
    image = image.convert("RGB")
    scale = DISPLAY_LONG_SIDE / max(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()


# The explained class is a diagnosis-like label, so it goes in the encrypted summary only;
# `params` (plaintext) keeps the method's settings.
EXPLAINED_CLASS_KEYS = ("class_index", "class_name")


def _settings_only(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in EXPLAINED_CLASS_KEYS}


# The order the worker computes them: the risk first, since triage acts on it; CAM first, it is cheap.
ORDER = (
    (Explanation.Kind.CAM, Explanation.Target.RISK),
    (Explanation.Kind.CAM, Explanation.Target.TOP_CLASS),
    (Explanation.Kind.LIME, Explanation.Target.RISK),
    (Explanation.Kind.LIME, Explanation.Target.TOP_CLASS),
)


def _class_index(target: str):
    """The inference library's way to name what is explained (RISK, or None for the top class)."""
    if target == Explanation.Target.RISK:
        return explanations.RISK
    if target == Explanation.Target.TOP_CLASS:
        return None
    raise ValueError(f"unknown explanation target {target!r}")


def _compute(kind: str, target: str, classifier, image: Image.Image) -> tuple[bytes, dict, dict]:
    class_index = _class_index(target)
    if kind == Explanation.Kind.CAM:
        cam = explanations.compute_cam(classifier, image, class_index=class_index)
        overlay = explanations.heatmap_rgba(cam.heatmap, image.size)
        # `target` names what is explained (risk or top class), not which class: it stays plain.
        params = {"method": "cam", "target": target, "feature_grid": list(cam.heatmap.shape)}
        return _png(overlay), params, {"class_index": cam.class_index, "class_name": cam.class_name}
    if kind != Explanation.Kind.LIME:
        raise ValueError(f"unknown explanation kind {kind!r}")
    lime = explanations.explain_lime(classifier, image, class_index=class_index)
    overlay = lime.render(image)
    summary = lime.to_dict()
    summary["params"] = _settings_only(summary["params"])
    return _png(overlay), {"method": "lime", "target": target, **_settings_only(lime.params)}, summary


def explanation_compute(
    *, examination_id: int, kind: str, target: str = Explanation.Target.RISK, force: bool = False
) -> Explanation:
    """Idempotent: an explanation already DONE for this model file is returned untouched."""
    if target not in Explanation.Target.values:
        raise ValueError(f"unknown explanation target {target!r}")
    classifier = risk.classifier()
    exam = Examination.objects.get(pk=examination_id)
    explanation, _ = Explanation.objects.get_or_create(
        examination=exam, kind=kind, target=target, model_sha256=classifier.sha256
    )
    if explanation.status == Explanation.Status.DONE and not force:
        return explanation
    started = time.perf_counter()
    try:
        image = _display_image(exam)
        png, params, summary = _compute(kind, target, classifier, image)
    except ExplanationFailed as exc:
        return explanation_mark_failed(explanation=explanation, reason=str(exc))
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    old_name = explanation.image.name if explanation.image else None
    with transaction.atomic():
        explanation.image.save("overlay", ContentFile(png), save=False)
        explanation.params = params
        explanation.summary = summary  # type: ignore[assignment]  # EncryptedJSONField: its base class is untyped
        explanation.status = Explanation.Status.DONE
        explanation.failure_reason = ""
        explanation.compute_ms = elapsed_ms
        explanation.save()
    if old_name:
        explanation.image.storage.delete(old_name)
    logger.info("explanation %s/%s for examination %s took %d ms", kind, target, exam.uuid, elapsed_ms)
    return explanation


def explanation_mark_failed(*, explanation: Explanation, reason: str) -> Explanation:
    Explanation.objects.filter(pk=explanation.pk).update(status=Explanation.Status.FAILED, failure_reason=reason[:300])
    explanation.refresh_from_db()
    return explanation


def explanations_pending(*, examination_id: int) -> None:
    """Placeholder rows so the page can say 'pending' before the worker starts."""
    sha = risk.classifier().sha256
    for kind, target in ORDER:
        Explanation.objects.get_or_create(examination_id=examination_id, kind=kind, target=target, model_sha256=sha)
