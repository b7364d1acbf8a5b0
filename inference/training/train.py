"""Fine-tunes EfficientNet-Lite0 on the HAM10000 training split.

    python -m inference.training.train --data ../shared/data/ham10000

Full fine-tuning at a 4:3 input (192 x 144 by default, the pack's images are 200 x 150) with
Shades-of-Gray colour constancy and device augmentation, on a fixed cosine schedule run to the
end; the model is the EMA of the weights after the last epoch. Validation only reports (per-class
recall every epoch) and, in export, calibrates: no early stop and no checkpoint choice on a
metric that a handful of validation images can swing. Seeds are fixed; `--resume` continues an
interrupted run from <work>/last.pt.
`python -m inference.training.build` runs this and everything after it (calibration,
export, quantisation, model card).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm import tqdm

from inference.metrics import summarise
from inference.preprocessing import to_model_input
from inference.training.augment import augment
from inference.training.data import decode, read_image_bytes, read_metadata
from inference.training.network import lite0_for_classes

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


class TrainSet(Dataset):
    def __init__(self, items: list[tuple[bytes, int]], size: tuple[int, int], seed: int) -> None:
        self.items = items
        self.size = size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        data, label = self.items[index]
        # One RNG per (seed, epoch, sample): reproducible whatever the worker count.
        rng = random.Random(hash((self.seed, self.epoch, index)) & 0xFFFFFFFF)
        pixels = augment(decode(data), self.size, rng)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), label


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_logits(model, images: list[bytes], size: tuple[int, int], batch: int = 64) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(
                to_model_input([decode(b) for b in images[i : i + batch]], size, colour_constancy=True)
            )
            logits, _ = model(x.contiguous(memory_format=torch.channels_last))
            out.append(logits.float().numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--work", type=Path, default=Path("artifacts/training"))
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--epochs", type=int, default=10, help="length of the fixed cosine schedule, run to the end")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--ema", type=float, default=0.998)
    parser.add_argument("--freeze-blocks", type=int, default=0, help="stem + this many MBConv blocks stay frozen")
    parser.add_argument("--resume", action="store_true", help="continue from <work>/last.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="debug: use only this many training images")
    args = parser.parse_args(argv)

    set_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.work.mkdir(parents=True, exist_ok=True)

    samples = read_metadata(args.data)
    images = read_image_bytes(args.data)
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    if args.limit:
        train = random.Random(args.seed).sample(train, args.limit)
    class_index = {c: i for i, c in enumerate(CLASSES)}
    counts = np.bincount([class_index[s.dx] for s in train], minlength=len(CLASSES)).astype(np.float64)

    # Balance in two halves: sampling by count^-0.5 and loss weights by count^-0.5 give an
    # inverse-frequency objective overall without repeating the 78 df images 60 times an epoch.
    sample_weight = counts**-0.5
    loss_weight = torch.tensor(counts**-0.5 / (counts**-0.5 * counts).sum() * counts.sum(), dtype=torch.float32)
    train_items = [(images[s.image_id], class_index[s.dx]) for s in train]
    size = (args.width, args.height)
    dataset = TrainSet(train_items, size, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    sampler = WeightedRandomSampler(
        [sample_weight[label] for _, label in train_items], len(train_items), replacement=True, generator=generator
    )
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=False,
    )
    val_bytes = [images[s.image_id] for s in val]
    val_labels = np.array([class_index[s.dx] for s in val])

    model = lite0_for_classes(len(CLASSES))
    frozen = [model._conv_stem, model._bn0, *model._blocks[: args.freeze_blocks]] if args.freeze_blocks else []
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
    model = model.to(device).to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * args.epochs
    warmup = steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 1e-5 + (args.lr - 1e-5) * 0.5 * (1 + math.cos(math.pi * progress))

    log: list[dict] = []
    log_path = args.work / "train_log.json"
    last_path = args.work / "last.pt"
    step, first_epoch = 0, 0
    start = time.time()
    if args.resume and last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, first_epoch, log = state["step"], state["epoch"], state["log"]
        start -= log[-1]["elapsed_s"] if log else 0
        print(f"resumed after epoch {first_epoch} (step {step})", flush=True)

    def summary(finished: bool) -> dict:
        return {
            "args": {k: str(v) for k, v in vars(args).items()},
            "epochs": log,
            "chosen_checkpoint": f"epoch{len(log):02d}.pt" if finished else None,
            "selection": "EMA weights after the last epoch of a fixed cosine schedule (no early stop)",
            "finished": finished,
            "wall_time_s": round(time.time() - start, 1),
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
        }

    for epoch in range(first_epoch, args.epochs):
        dataset.epoch = epoch
        model.train()
        for module in frozen:
            module.eval()  # frozen layers keep their ImageNet batch-norm statistics
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", mininterval=30)
        for x, y in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            logits, _ = model(x)
            loss = F.cross_entropy(logits, y, weight=loss_weight.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                d = min(args.ema, (1 + step) / (10 + step))
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.mul_(d).add_(pm.detach(), alpha=1 - d)
                for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
                    be.copy_(bm)
            step += 1
            running += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{running / seen:.3f}", lr=f"{lr_at(step):.2e}")

        logits = predict_logits(ema, val_bytes, size)
        probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
        metrics = summarise(val_labels, probs, CLASSES)
        entry = {
            "epoch": epoch + 1,
            "train_loss": running / max(seen, 1),
            "val_balanced_accuracy": metrics["balanced_accuracy"],
            "val_accuracy": metrics["accuracy"],
            "val_malignant_auc": metrics["malignant_auc"],
            "val_recall": {c: round(v["recall"], 4) for c, v in metrics["per_class"].items()},
            "elapsed_s": round(time.time() - start, 1),
        }
        log.append(entry)
        torch.save(ema.state_dict(), args.work / f"epoch{epoch + 1:02d}.pt")
        torch.save(
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": epoch + 1,
                "log": log,
            },
            last_path,
        )
        print(json.dumps(entry), flush=True)
        log_path.write_text(json.dumps(summary(finished=False), indent=2))

    final = summary(finished=True)
    log_path.write_text(json.dumps(final, indent=2))
    chosen_path = args.work / final["chosen_checkpoint"]
    print(f"final EMA checkpoint {chosen_path}", flush=True)
    return chosen_path


if __name__ == "__main__":
    main()
