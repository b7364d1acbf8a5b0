"""Text in lesion images: read it (offline, CPU), find record numbers in it, mask it for the model.

The portal's engine is RapidOCR (`rapidocr-onnxruntime`: PaddleOCR's detection and recognition
networks as ONNX files inside the wheel, run on our onnxruntime); `benchmarks/ocr.py` compares it
with Tesseract and says why (README, "Text in images").

Record numbers: a match of `RECORD_NUMBER_PATTERN` in the uppercased text, where the letters part
may have been read as digits and back (O/0, I/1 are the usual OCR confusions). `normalise_record_number`
undoes those *only inside a match*, by position: in the letters part 0→O and 1→I, in the digits
part O→0 and I→1 (and L→1); dashes of any kind and spaces around the dash are dropped to one
"-". Free text outside a match is never rewritten. The patient's own MRN is compared after the
same normalisation (`same_record_number`), so "dt 1001" on a label is the patient "DT-1001".
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# 2-3 letters (or look-alike digits), an optional dash, 4-6 digits (or look-alike letters).
_DASH = r"[-\u2010\u2011\u2013\u2014_.]"
RECORD_NUMBER_PATTERN = re.compile(rf"(?<![A-Z0-9])([A-Z01]{{2,3}})\s?{_DASH}?\s?([0-9OIL]{{4,6}})(?![A-Z0-9])")
_LETTERS = str.maketrans({"0": "O", "1": "I"})
_DIGITS = str.maketrans({"O": "0", "I": "1", "L": "1"})


@dataclass(frozen=True)
class TextBox:
    text: str
    score: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image's pixels


@dataclass(frozen=True)
class OcrResult:
    boxes: list[TextBox] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.boxes)

    @property
    def record_numbers(self) -> list[str]:
        return find_record_numbers(self.text)


def normalise_record_number(raw: str) -> str:
    """Uppercase, no spaces; inside a record-number match the O/0 and I/1 confusions undone."""
    text = re.sub(r"\s+", "", raw.upper())
    match = RECORD_NUMBER_PATTERN.fullmatch(text)
    if match is None:
        return re.sub(_DASH, "-", text)
    return f"{match.group(1).translate(_LETTERS)}-{match.group(2).translate(_DIGITS)}"


def find_record_numbers(text: str) -> list[str]:
    """Record numbers in free text, normalised, in order, without repeats."""
    found: list[str] = []
    for match in RECORD_NUMBER_PATTERN.finditer(text.upper()):
        number = f"{match.group(1).translate(_LETTERS)}-{match.group(2).translate(_DIGITS)}"
        if not any(c.isalpha() for c in number.split("-")[0]):
            continue  # "2017-0101": a date or a measurement, not a record number
        if number not in found:
            found.append(number)
    return found


def same_record_number(a: str, b: str) -> bool:
    return normalise_record_number(a) == normalise_record_number(b)


def mask_text(image: Image.Image, boxes: Sequence[tuple[int, int, int, int]], *, pad: int = 2) -> Image.Image:
    """A copy with every box filled with the image's median colour (what the model sees)."""
    if not boxes:
        return image
    rgb = image.convert("RGB")
    median = tuple(int(v) for v in np.median(np.asarray(rgb).reshape(-1, 3), axis=0))
    out = rgb.copy()
    draw = ImageDraw.Draw(out)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=median)
    return out


def stored_boxes(stored: Sequence[Sequence[float]] | None) -> list[tuple[int, int, int, int]]:
    """The boxes of a stored list (JSON, as `TextBox.box` was saved) as integer rectangles; an
    entry that is not four numbers is dropped, not guessed at."""
    return [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in stored or [] if len(b) == 4]


def plausible_text(text: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    """Drops what the detector finds in the lesion itself: a box of fewer than two letters or
    digits ("8", "®" over a pigment network), or one taller than 45 % of the image (a 40 px line
    rotated by 15 degrees on a 300 px image is ~30 %). Without this, masking such a box hid the
    lesion from the model (benchmarks/ocr_masking.py)."""
    return sum(c.isalnum() for c in text) >= 2 and (box[3] - box[1]) <= 0.45 * size[1]


class RapidOcrEngine:
    """RapidOCR on onnxruntime, loaded once per process, lazily. Small images are enlarged before
    detection (the detector was trained on documents; our photographs are 200 x 150 and up)."""

    name = "rapidocr-onnxruntime"

    def __init__(
        self,
        *,
        min_side: int = 300,
        det_side: int = 480,
        use_cls: bool = False,
        threads: int = 2,
        min_score: float = 0.5,
        unclip_ratio: float = 1.6,
        box_thresh: float = 0.5,
    ) -> None:
        self.unclip_ratio = unclip_ratio  # how far detected boxes are grown before recognition
        self.box_thresh = box_thresh  # the detector's mean score a box needs
        self.min_side = min_side
        self.det_side = det_side
        self.use_cls = use_cls
        self.threads = threads
        self.min_score = min_score
        self._engine = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._engine is None:
                from rapidocr_onnxruntime import RapidOCR

                # The 180° classifier is off by default: labels are upright within ±15° here.
                self._engine = RapidOCR(
                    det_limit_side_len=self.det_side,
                    use_cls=self.use_cls,
                    intra_op_num_threads=self.threads,
                    inter_op_num_threads=1,
                )
        return self._engine

    def read(self, image: Image.Image) -> OcrResult:
        engine = self._load()
        rgb = image.convert("RGB")
        factor = max(1.0, self.min_side / min(rgb.size))
        if factor > 1.0:
            rgb = rgb.resize((round(rgb.width * factor), round(rgb.height * factor)), Image.Resampling.BICUBIC)
        # RapidOCR takes BGR arrays (OpenCV's order).
        result, _elapse = engine(
            np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]),
            use_cls=self.use_cls,
            unclip_ratio=self.unclip_ratio,
            box_thresh=self.box_thresh,
        )
        boxes: list[TextBox] = []
        for quad, text, score in result or []:
            if float(score) < self.min_score or not str(text).strip():
                continue
            xs = [p[0] / factor for p in quad]
            ys = [p[1] / factor for p in quad]
            box = (int(min(xs)), int(min(ys)), int(np.ceil(max(xs))), int(np.ceil(max(ys))))
            if not plausible_text(str(text), box, image.size):
                continue
            boxes.append(TextBox(text=str(text).strip(), score=round(float(score), 4), box=box))
        return OcrResult(boxes=boxes)


_default: RapidOcrEngine | None = None


def default_engine() -> RapidOcrEngine:
    global _default
    if _default is None:
        _default = RapidOcrEngine()
    return _default
