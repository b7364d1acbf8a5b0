"""Explanation benchmark: LIME with lime's defaults vs our settings, and CAM, on real
validation images.

    python benchmarks/explain.py                 # 20 images, 2 onnxruntime threads
    python benchmarks/explain.py --n 5 --threads 1
    python benchmarks/explain.py --sweep --n 10  # the grid the LIME settings were chosen from

LIME defaults = `LimeImageExplainer().explain_instance(image, fn)`: quickshift segmentation
(kernel_size=4, max_dist=200, ratio=0.2), 1000 samples, batches of 10, top 5 labels, lime's
per-sample loop. Ours = `inference.explanations.explain_lime` with `LimeSettings()`. Both
explain the same squashed model-input image with the same probability function, so the
time ratio is measured in the same run on the same images.

Stability: each image is explained with two seeds (0 and 1); the score is the overlap of the
top-5 superpixels pushing towards the predicted class, |A & B| / 5. The segmentation does not
depend on the seed (SLIC is deterministic; quickshift's tie-breaking seed is held at 0), so
the two runs differ only in lime's random perturbations. Each LIME run is one timing sample;
on each image and seed the two methods run back to back, and the paired ratio is reported
next to the ratio of the medians (the machine may be shared).

CAM: `cam_for_prediction` (numpy CAM from the features of the inference the portal already
made) + the overlay at the photograph's size, with and without that inference.

Faithfulness (extra column): drop of the class probability when the top-5 positive
superpixels are filled with the image's mean colour (higher = the highlighted regions matter
more to the model). It uses one fill for both methods.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # lime's per-sample progress bar
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference import explanations as ex
from inference.preprocessing import prepare_image
from inference.training.data import decode, read_image_bytes, read_metadata

SEEDS = (0, 1)
TOP_K = 5


def load_validation_images(data_dir: Path, n: int, seed: int = 0):
    """n validation images, drawn class by class in turn (seeded), so rare classes appear."""
    val = sorted((s for s in read_metadata(data_dir) if s.split == "val"), key=lambda s: s.image_id)
    rng = random.Random(seed)
    by_class: dict[str, list] = {}
    for s in val:
        by_class.setdefault(s.dx, []).append(s)
    for items in by_class.values():
        rng.shuffle(items)
    picked, i = [], 0
    while len(picked) < n:
        for dx in sorted(by_class):
            if i < len(by_class[dx]) and len(picked) < n:
                picked.append(by_class[dx][i])
        i += 1
    raw = read_image_bytes(data_dir, {s.image_id for s in picked})
    return [(s.image_id, s.dx, decode(raw[s.image_id])) for s in picked]


def load_classifier(spec: str, threads: int):
    os.environ.setdefault("DERMATRACK_ORT_THREADS", str(threads))
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "get_classifier")()


def top_positive(weights: np.ndarray, k: int = TOP_K) -> set[int]:
    order = np.argsort(-weights, kind="stable")
    return {int(i) for i in order[:k] if weights[i] > 0}


def overlap(a: set[int], b: set[int], k: int = TOP_K) -> float:
    return len(a & b) / k


def deletion_drop(fn, pixels: np.ndarray, segments: np.ndarray, ids: set[int], c: int) -> float:
    hidden = pixels.copy()
    mask = np.isin(segments, list(ids))
    hidden[mask] = pixels.reshape(-1, 3).mean(0).round().astype(np.uint8)
    p = fn(np.stack([pixels, hidden]))
    return float(p[0, c] - p[1, c])


def lime_defaults(classifier, pixels: np.ndarray, seed: int):
    """lime's defaults, as a user of the library would call it; returns (segments, weights, class)."""
    from lime.lime_image import LimeImageExplainer

    fn = ex.probability_fn(classifier)
    explanation = LimeImageExplainer(random_state=seed).explain_instance(pixels, fn, random_seed=0)
    c = int(explanation.top_labels[0])
    weights = np.zeros(int(explanation.segments.max()) + 1)
    for feature, weight in explanation.local_exp[c]:
        weights[feature] = weight
    return explanation.segments, weights, c


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def run_lime(classifier, images, methods: dict, quiet: bool = False) -> dict:
    """methods: label -> LimeSettings, or None for lime's defaults. Two seeds per image; the
    methods take turns on each image and seed, so a change of machine load hits them alike."""
    fn = ex.probability_fn(classifier)
    stats = {label: {"times": [], "overlaps": [], "drops": [], "segments": [], "scores": []} for label in methods}
    for image_id, dx, image in images:
        pixels = np.asarray(prepare_image(image, classifier.input_size), dtype=np.uint8)
        tops: dict[str, list] = {label: [] for label in methods}
        last: dict[str, tuple] = {}
        for seed in SEEDS:
            for label, settings in methods.items():
                start = time.perf_counter()
                if settings is None:
                    segments, weights, c = lime_defaults(classifier, pixels, seed)
                else:
                    e = ex.explain_lime(classifier, image, settings=replace(settings, seed=seed))
                    segments, weights, c = e.segments, e.weights, e.class_index
                    stats[label]["scores"].append(e.score)
                stats[label]["times"].append(time.perf_counter() - start)
                tops[label].append(top_positive(weights))
                if seed == SEEDS[0]:
                    last[label] = (segments, c)
        line = f"  {image_id} {dx:5s}"
        for label in methods:
            st = stats[label]
            st["overlaps"].append(overlap(*tops[label]))
            segments, c = last[label]
            st["drops"].append(deletion_drop(fn, pixels, segments, tops[label][0], c))
            st["segments"].append(int(segments.max()) + 1)
            line += f"  {label} {st['times'][-2]:5.2f}s {st['times'][-1]:5.2f}s overlap {st['overlaps'][-1]:.1f}"
        if not quiet:
            print(line, flush=True)
    return {
        label: {
            "p50_s": pct(st["times"], 50),
            "p95_s": pct(st["times"], 95),
            "times": st["times"],
            "overlap": float(np.mean(st["overlaps"])),
            "overlap_min": float(np.min(st["overlaps"])),
            "deletion_drop": float(np.mean(st["drops"])),
            "segments": float(np.mean(st["segments"])),
            "r2": float(np.mean(st["scores"])) if st["scores"] else float("nan"),
            "runs": len(st["times"]),
        }
        for label, st in stats.items()
    }


def run_cam(classifier, images, repeats: int = 5) -> dict:

    only, total = [], []
    for _, _, image in images:
        for _ in range(repeats):
            t0 = time.perf_counter()
            probabilities, _, features = classifier.predict_arrays(classifier.preprocess([image]))
            t1 = time.perf_counter()
            cam = ex.cam_for_prediction(classifier, probabilities[0], features[0])
            ex.overlay(image, cam.heatmap)
            t2 = time.perf_counter()
            only.append((t2 - t1) * 1000)
            total.append((t2 - t0) * 1000)
    return {
        "cam_p50_ms": pct(only, 50),
        "cam_p95_ms": pct(only, 95),
        "with_inference_p50_ms": pct(total, 50),
        "with_inference_p95_ms": pct(total, 95),
        "runs": len(only),
    }


def sweep(
    classifier,
    images,
    segments=(20, 30, 50),
    samples=(150, 300, 500),
    hides=("segment_mean", "image_mean"),
    compactness=(10.0,),
    kernel_widths=(0.25,),
    samplings=("lime",),
) -> list[dict]:
    base = ex.LimeSettings()
    grid = [
        replace(base, n_segments=n, num_samples=s, hide=h, compactness=c, kernel_width=k, sampling=m)
        for n in segments
        for s in samples
        for h in hides
        for c in compactness
        for k in kernel_widths
        for m in samplings
    ]
    rows = []
    for settings in grid:
        row = run_lime(classifier, images, {"sweep": settings}, quiet=True)["sweep"]
        row.update(
            n_segments=settings.n_segments,
            compactness=settings.compactness,
            num_samples=settings.num_samples,
            hide=settings.hide,
            kernel_width=settings.kernel_width,
            sampling=settings.sampling,
        )
        rows.append(row)
        print(
            f"  n_seg {settings.n_segments:3d} compact {settings.compactness:4.0f} samples {settings.num_samples:4d} "
            f"{settings.hide:12s} kernel {settings.kernel_width:4.2f} {settings.sampling:10s}"
            f"  p50 {row['p50_s']:.2f}s p95 {row['p95_s']:.2f}s  overlap {row['overlap']:.2f} "
            f"(min {row['overlap_min']:.1f})  deletion {row['deletion_drop']:+.3f}  R2 {row['r2']:.2f}  "
            f"segments {row['segments']:.0f}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="validation images")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--classifier", default="inference.classifier:get_classifier", help="module:callable")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (DERMATRACK_ORT_THREADS)")
    parser.add_argument("--sweep", action="store_true", help="run the LIME settings grid instead")
    parser.add_argument("--sweep-segments", default="20,30,50", help="SLIC n_segments values of the grid")
    parser.add_argument("--sweep-samples", default="150,300,500", help="num_samples values of the grid")
    parser.add_argument("--sweep-hide", default="segment_mean,image_mean", help="hide modes of the grid")
    parser.add_argument("--sweep-compactness", default="10", help="SLIC compactness values of the grid")
    parser.add_argument("--sweep-kernel-width", default="0.25", help="lime kernel widths of the grid")
    parser.add_argument("--sweep-sampling", default="lime", help="sampling schemes of the grid (lime, antithetic)")
    parser.add_argument("--skip-defaults", action="store_true", help="leave out lime's defaults (slow)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    classifier = load_classifier(args.classifier, args.threads)
    images = load_validation_images(args.data, args.n)
    # Warm-up: onnxruntime's first runs allocate; not part of any measurement.
    width, height = classifier.input_wh
    ex.probability_fn(classifier)(np.zeros((100, height, width, 3), np.uint8))
    print(
        f"{classifier!r}, {len(images)} validation images, onnxruntime threads "
        f"{getattr(classifier, 'threads', os.environ.get('DERMATRACK_ORT_THREADS'))}, {os.cpu_count()} CPUs",
        flush=True,
    )

    if args.sweep:
        result = {
            "sweep": sweep(
                classifier,
                images,
                segments=[int(v) for v in args.sweep_segments.split(",")],
                samples=[int(v) for v in args.sweep_samples.split(",")],
                hides=args.sweep_hide.split(","),
                compactness=[float(v) for v in args.sweep_compactness.split(",")],
                kernel_widths=[float(v) for v in args.sweep_kernel_width.split(",")],
                samplings=args.sweep_sampling.split(","),
            )
        }
    else:
        methods = {"ours": ex.LimeSettings()} if args.skip_defaults else {"ours": ex.LimeSettings(), "defaults": None}
        lime_results = run_lime(classifier, images, methods)
        ours, defaults = lime_results["ours"], lime_results.get("defaults")
        cam = run_cam(classifier, images)
        result = {
            "settings": ex.LimeSettings().params(-1, "", -1, classifier.input_size),
            "ours": ours,
            "defaults": defaults,
            "cam": cam,
            "n_images": len(images),
        }
        s = ex.LimeSettings()
        print()
        print("| method | seconds p50 | seconds p95 | top-5 overlap (2 seeds) | deletion drop | superpixels |")
        print("|---|---|---|---|---|---|")
        if defaults:
            print(
                f"| LIME, lime defaults (quickshift, 1000 samples) | {defaults['p50_s']:.2f} | {defaults['p95_s']:.2f} "
                f"| {defaults['overlap']:.2f} | {defaults['deletion_drop']:+.3f} | {defaults['segments']:.0f} |"
            )
        print(
            f"| LIME, ours (SLIC {s.n_segments}, compactness {s.compactness:g}, {s.num_samples} {s.sampling} samples) "
            f"| {ours['p50_s']:.2f} | {ours['p95_s']:.2f} | {ours['overlap']:.2f} | {ours['deletion_drop']:+.3f} "
            f"| {ours['segments']:.0f} |"
        )
        if defaults:
            paired = np.asarray(defaults["times"]) / np.asarray(ours["times"])
            result["speedup_p50"] = defaults["p50_s"] / ours["p50_s"]
            result["speedup_paired_median"] = float(np.median(paired))
            print(
                f"\nspeed-up: p50 defaults / p50 ours {result['speedup_p50']:.1f}x; median of the "
                f"{len(paired)} paired runs (same image and seed, back to back) {result['speedup_paired_median']:.1f}x"
            )
        print(
            f"CAM from the prediction's features + overlay: p50 {cam['cam_p50_ms']:.1f} ms, "
            f"p95 {cam['cam_p95_ms']:.1f} ms; "
            f"with the inference: p50 {cam['with_inference_p50_ms']:.1f} ms, p95 {cam['with_inference_p95_ms']:.1f} ms "
            f"({cam['runs']} runs)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
