#!/usr/bin/env python
"""Teacher labelling passes in float32 and under bfloat16 autocast, side by side (`round_precision`).

    python benchmarks/bench_round_precision.py

The packaged MiniLM (random head) runs from layer 1 over 512 random sequences per length, in batches of 128, as a
round labels synthetic examples. Prints seconds per precision, the speed-up and the largest logit difference.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForSequenceClassification

from sage_hf import TeacherInterface, default_teacher_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(default_teacher_path()), num_labels=2)
    teacher = TeacherInterface(model.eval()).to(args.device)
    for length in args.lengths:
        ids = torch.randint(1000, 20000, (args.n, length), device=args.device)
        mask = torch.ones_like(ids)
        results = {}
        with torch.inference_mode():
            vectors = teacher.layer1(ids, mask)
            for name in ("float32", "bfloat16"):
                autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=name == "bfloat16")
                start = time.perf_counter()
                with autocast:
                    logits = torch.cat([teacher.logits_from_layer1(vectors[i:i + args.batch_size],
                                                                   mask[i:i + args.batch_size]).float()
                                        for i in range(0, args.n, args.batch_size)])
                results[name] = (time.perf_counter() - start, logits)
        (t32, l32), (t16, l16) = results["float32"], results["bfloat16"]
        print(f"length {length}: float32 {t32:.2f}s, bfloat16 {t16:.2f}s, speed-up {t32 / t16:.2f}x, "
              f"largest logit difference {(l32 - l16).abs().max().item():.4f}")


if __name__ == "__main__":
    main()
