"""Latency and throughput of the portal's classifier (onnxruntime) beside PyTorch eager.

    python -m benchmarks.inference [--data ../shared/data/ham10000] [--threads 2] [--repeats 300]

Both engines run the same network, the same fp32 input size, on the same real validation
images, with the same number of threads, in the same process one after the other:
- batch 1, model alone: preprocessed array in, calibrated probabilities out (p50 / p95);
- batch 1, end to end: JPEG bytes -> decode -> preprocessing -> model (p50 / p95);
- batch 32: throughput in images per second, model alone and end to end.
PyTorch eager loads the trained checkpoint (chosen_checkpoint of artifacts/training/train_log.json,
or --checkpoint); without torch that column is skipped. Goals (issue #2): model p50 <= 3 ms,
>= 4x faster than torch eager, end to end <= 6 ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `import inference` find the package, not this script
    _here = Path(__file__).resolve().parent
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse
import csv
import io
import json
import os
import platform
import tarfile
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from inference.classifier import LesionClassifier, default_metadata_path, softmax

GOAL_MODEL_P50_MS = 3.0
GOAL_E2E_P50_MS = 6.0
GOAL_SPEEDUP = 4.0
GOAL_TTA_P50_MS = 15.0


def load_validation_bytes(data_dir: Path, n: int) -> list[bytes]:
    with open(data_dir / "metadata.csv", newline="") as fh:
        ids = sorted(r["image_id"] for r in csv.DictReader(fh) if r.get("split", "val") == "val")[:n]
    wanted, found = set(ids), {}
    with tarfile.open(data_dir / "images.tar") as tar:
        for member in tar:
            stem = Path(member.name).stem
            if stem in wanted:
                found[stem] = tar.extractfile(member).read()
                if len(found) == len(wanted):
                    break
    return [found[i] for i in ids]


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(all-CPU seconds, busy CPU seconds, this process's CPU seconds), from /proc/stat where there is one."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return sum(ticks) / hz, (sum(ticks) - ticks[3] - ticks[4]) / hz, own.user + own.system


def other_load(start, end) -> float | None:
    """Share of all CPUs that other processes used between two snapshots: timings are only fair near 0."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def timings(fn: Callable[[int], object], repeats: int, warmup: int) -> np.ndarray:
    for i in range(warmup):
        fn(i)
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t0
    return out * 1000.0  # ms


def measure(
    predict_array: Callable[[np.ndarray], np.ndarray],
    preprocess: Callable[[list], np.ndarray],
    blobs: list[bytes],
    x: np.ndarray,
    args,
) -> dict:
    n = len(blobs)
    model1 = timings(lambda i: predict_array(x[i % n : i % n + 1]), args.repeats, args.warmup)
    e2e1 = timings(lambda i: predict_array(preprocess([decode(blobs[i % n])])), args.repeats, args.warmup)
    batches = max(3, args.repeats // 30)
    starts = [(32 * i) % (n - 31) for i in range(batches)]
    model32 = timings(lambda i: predict_array(x[starts[i % batches] : starts[i % batches] + 32]), batches, 2)
    e2e32 = timings(
        lambda i: predict_array(preprocess([decode(b) for b in blobs[starts[i % batches] : starts[i % batches] + 32]])),
        batches,
        1,
    )
    return {
        "model_p50_ms": float(np.percentile(model1, 50)),
        "model_p95_ms": float(np.percentile(model1, 95)),
        "e2e_p50_ms": float(np.percentile(e2e1, 50)),
        "e2e_p95_ms": float(np.percentile(e2e1, 95)),
        "model_b32_img_s": 32_000.0 / float(np.median(model32)),
        "e2e_b32_img_s": 32_000.0 / float(np.median(e2e32)),
    }


def torch_predictor(args, classifier: LesionClassifier):
    """Returns (predict_array, description) for PyTorch eager, or (None, reason)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed (pip install -r requirements/train.txt): torch column skipped"
    from inference.training.network import EfficientNetLite0

    torch.set_num_threads(args.threads)
    model = EfficientNetLite0(num_classes=len(classifier.classes)).eval()
    checkpoint = args.checkpoint
    if checkpoint is None:
        log = Path("artifacts/training/train_log.json")
        if log.is_file() and "chosen_checkpoint" in json.loads(log.read_text()):
            checkpoint = log.parent / json.loads(log.read_text())["chosen_checkpoint"]
    if checkpoint is not None and Path(checkpoint).is_file():
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        what = f"torch {torch.__version__} eager fp32, checkpoint {checkpoint}"
    else:
        what = f"torch {torch.__version__} eager fp32, NO checkpoint found: random weights (same cost)"

    def predict_array(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits, _features = model(torch.from_numpy(batch))
        return softmax(logits.numpy(), classifier.temperature)

    return predict_array, what


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--metadata", type=Path, default=None, help="model metadata (default: the committed model)")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="torch checkpoint (default: chosen one in artifacts/)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=96, help="distinct validation images cycled through")
    parser.add_argument("--repeats", type=int, default=300, help="timed batch-1 runs per measurement")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.images = max(args.images, 33)

    classifier = LesionClassifier(args.metadata or default_metadata_path(), threads=args.threads)
    blobs = load_validation_bytes(args.data, args.images)
    x = classifier.preprocess([decode(b) for b in blobs])

    def ort_predict(batch: np.ndarray) -> np.ndarray:
        return classifier.predict_arrays(batch, tta=False)[0]

    def ort_predict_tta(batch: np.ndarray) -> np.ndarray:
        return classifier.predict_arrays(batch)[0]

    import onnxruntime

    snapshot = cpu_snapshot()
    results = {"onnxruntime": measure(ort_predict, classifier.preprocess, blobs, x, args)}
    if classifier.tta != "none":
        # What the portal runs: the mean over the test-time views (issue #10 goal: p50 <= 15 ms).
        results["onnxruntime_tta"] = measure(ort_predict_tta, classifier.preprocess, blobs, x, args)
    torch_note = "skipped (--no-torch)"
    if not args.no_torch:
        predict, torch_note = torch_predictor(args, classifier)
        if predict is not None:
            agree = float((predict(x[:32]).argmax(1) == ort_predict(x[:32]).argmax(1)).mean())
            results["torch"] = measure(predict, classifier.preprocess, blobs, x, args)
            results["torch"]["top1_agreement_with_onnx_on_32"] = agree

    busy = other_load(snapshot, cpu_snapshot())
    results["other_processes_cpu_share"] = busy
    print(
        f"model     {classifier.name} {classifier.version} ({classifier.metadata.get('precision', '?')}, "
        f"sha256 {classifier.sha256[:12]}), input {classifier.input_size} px"
    )
    print(f"engines   onnxruntime {onnxruntime.__version__} (graph optimisation ALL) | {torch_note}")
    print(
        f"machine   {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads per "
        "engine, "
        f"load average {os.getloadavg()[0]:.2f}; {len(blobs)} validation images, {args.repeats} timed runs per "
        "batch-1 figure"
    )
    if busy is not None:
        print(
            f"other processes used {100 * busy:.0f} % of the CPUs during the measurements"
            + ("" if busy < 0.1 else ": the machine was busy, these timings are NOT representative")
        )
    rows = [
        ("batch 1, model, p50 (ms)", "model_p50_ms", True),
        ("batch 1, model, p95 (ms)", "model_p95_ms", True),
        ("batch 1, decode+preprocess+model, p50 (ms)", "e2e_p50_ms", True),
        ("batch 1, decode+preprocess+model, p95 (ms)", "e2e_p95_ms", True),
        ("batch 32, model (images/s)", "model_b32_img_s", False),
        ("batch 32, decode+preprocess+model (images/s)", "e2e_b32_img_s", False),
    ]
    has_torch = "torch" in results
    has_tta = "onnxruntime_tta" in results
    print()
    print(
        f"{'':46}{'onnxruntime':>12}"
        + (f"{'ort + TTA':>12}" if has_tta else "")
        + (f"{'torch eager':>13}{'speed-up':>10}" if has_torch else "")
    )
    for label, key, lower_is_better in rows:
        line = f"{label:46}{results['onnxruntime'][key]:>12.2f}"
        if has_tta:
            line += f"{results['onnxruntime_tta'][key]:>12.2f}"
        if has_torch:
            o, t = results["onnxruntime"][key], results["torch"][key]
            line += f"{t:>13.2f}{(t / o if lower_is_better else o / t):>9.1f}x"
        print(line)
    print("(torch eager and the speed-up: one view, the same network and input as the onnxruntime column)")
    print()
    ort = results["onnxruntime"]
    goals = {
        "model_p50_le_3ms": ort["model_p50_ms"] <= GOAL_MODEL_P50_MS,
        "e2e_p50_le_6ms": ort["e2e_p50_ms"] <= GOAL_E2E_P50_MS,
    }
    print(
        f"goal: model p50 <= {GOAL_MODEL_P50_MS:g} ms             {'met' if goals['model_p50_le_3ms'] else 'NOT met'} "
        f"({ort['model_p50_ms']:.2f} ms)"
    )
    print(
        f"goal: end-to-end p50 <= {GOAL_E2E_P50_MS:g} ms        {'met' if goals['e2e_p50_le_6ms'] else 'NOT met'} "
        f"({ort['e2e_p50_ms']:.2f} ms)"
    )
    if has_tta:
        tta_p50 = results["onnxruntime_tta"]["model_p50_ms"]
        goals["tta_model_p50_le_15ms"] = tta_p50 <= GOAL_TTA_P50_MS
        print(
            f"goal: model p50 with TTA ({classifier.tta}) <= {GOAL_TTA_P50_MS:g} ms  "
            f"{'met' if goals['tta_model_p50_le_15ms'] else 'NOT met'} ({tta_p50:.2f} ms)"
        )
    if has_torch:
        speedup = results["torch"]["model_p50_ms"] / ort["model_p50_ms"]
        goals["speedup_ge_4x"] = speedup >= GOAL_SPEEDUP
        print(
            f"goal: >= {GOAL_SPEEDUP:g}x faster than torch eager   {'met' if goals['speedup_ge_4x'] else 'NOT met'} "
            f"({speedup:.1f}x at batch 1, model p50)"
        )
    else:
        print(f"goal: >= {GOAL_SPEEDUP:g}x faster than torch eager   not measured ({torch_note})")
    results["goals"] = goals
    results["settings"] = {
        "threads": args.threads,
        "repeats": args.repeats,
        "images": len(blobs),
        "model_sha256": classifier.sha256,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
