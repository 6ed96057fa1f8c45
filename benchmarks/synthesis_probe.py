#!/usr/bin/env python
"""How far does each synthesis method move its anchors, and how much does a synthetic point teach?

For every registered synthesis method (or those named), one SAGE round from the same student and the same anchors,
then, per synthetic example and its anchor:
- the teacher's KL(anchor || synthetic) and how often the teacher's label flips (did the method make anything new?);
- the student-teacher divergence at the synthetic point vs at its anchor (is the point where the student is wrong?);
- the layer-1 distance from the anchor relative to the token vectors' norm.
A method whose synthetic points the teacher labels like their anchors, and where the student already agrees, adds
little that plain KD on the anchors would not: this is the cheap check behind "shift may be nearly inert".

    python benchmarks/synthesis_probe.py --glue_dir ../shared/data/glue --n 1500 --anchors 300
    python benchmarks/synthesis_probe.py --glue_dir ../shared/data/glue --task mrpc --n 3668 --anchors 1000 \
        --max_seq_length 128 --teacher benchmarks/results/work/teachers/mrpc --methods swap swap_shared shift

The teacher is the packaged MiniLM fine-tuned on the `n` examples by the recipe's teacher stage (cached in
--work); the student (3 layers from teacher layers 0, 2, 4) gets one epoch of plain KD first, so it is neither the
teacher nor untrained. Prints a markdown table and writes it, with the settings, to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from sage_hf import SageStudentForSequenceClassification, SageTrainer, SageTrainingArguments, TeacherInterface
from sage_hf.data.stages import load_task_data, teacher_stage, tokenize_task
from sage_hf.models.offline import default_teacher_path
from sage_hf.rounds.buffer import entry_batch
from sage_hf.rounds.config import RoundConfig
from sage_hf.rounds.engine import SageEngine
from sage_hf.rounds.synthesis import SYNTHESIS_METHODS

# probe-only names for a method with settings: name -> SageTrainingArguments overrides
VARIANTS = {"swap_shared": {"synthesis": "swap", "swap_shared_words": True}}


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    p, q = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return (p.exp() * (p - q)).sum(-1)


@torch.no_grad()
def probe(engine: SageEngine, student, synthetic_rows) -> dict[str, float]:
    """Statistics of the buffer's synthetic entries against their (unperturbed) anchors."""
    entries = engine.buffer.contents()
    teacher, method = engine.teacher, engine.method
    rows = [int(r) for r in synthetic_rows]
    t_syn, s_syn, t_anc, s_anc, rel = [], [], [], [], []
    for start in range(0, len(rows), 64):
        chunk = rows[start:start + 64]
        batch = entry_batch(engine.features, entries, method, chunk)
        vectors, mask = method.materialise(teacher, batch)
        clean_mask = batch["attention_mask"]
        clean = teacher.layer1(batch["input_ids"], clean_mask, batch.get("token_type_ids"))
        t_syn.append(entries.teacher_logits[chunk])
        s_syn.append(student(inputs_embeds=vectors, attention_mask=mask).logits.float())
        t_anc.append(engine.teacher_logits[entries.source[chunk]])
        s_anc.append(student(inputs_embeds=clean, attention_mask=clean_mask).logits.float())
        width = min(vectors.shape[1], clean.shape[1])
        moved = (vectors[:, :width] - clean[:, :width]).norm(dim=-1)
        real = clean_mask[:, :width].bool()
        rel.append(moved[real] / clean[:, :width].norm(dim=-1)[real])
    t_syn, s_syn, t_anc, s_anc = (torch.cat(x) for x in (t_syn, s_syn, t_anc, s_anc))
    teacher_kl = kl(t_anc, t_syn)
    return {
        "teacher_kl_anchor_to_synthetic_median": float(teacher_kl.median()),
        "teacher_kl_anchor_to_synthetic_mean": float(teacher_kl.mean()),
        "teacher_label_flips": float((t_anc.argmax(-1) != t_syn.argmax(-1)).float().mean()),
        # the share of the teacher's last class (paraphrase, entailment, positive): does synthesis move the balance?
        "teacher_last_class_at_anchors": float((t_anc.argmax(-1) == t_anc.shape[-1] - 1).float().mean()),
        "teacher_last_class_at_synthetic": float((t_syn.argmax(-1) == t_syn.shape[-1] - 1).float().mean()),
        "student_teacher_kl_at_synthetic": float(kl(t_syn, s_syn).mean()),
        "student_teacher_kl_at_anchors": float(kl(t_anc, s_anc).mean()),
        "token_move_relative_median": float(torch.cat(rel).median()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--glue_dir", default=None)
    p.add_argument("--task", default="sst2")
    p.add_argument("--n", type=int, default=1500, help="training examples (teacher fine-tuning and the round)")
    p.add_argument("--anchors", type=int, default=300, help="synthetic examples per method")
    p.add_argument("--methods", nargs="+", default=list(SYNTHESIS_METHODS), choices=[*SYNTHESIS_METHODS, *VARIANTS],
                   help=f"synthesis methods, or variants: {', '.join(f'{k} = {v}' for k, v in VARIANTS.items())}")
    p.add_argument("--teacher", default=None, help="a fine-tuned teacher folder (default: fine-tune the packaged "
                   "MiniLM on the n examples, 2 epochs)")
    p.add_argument("--max_seq_length", type=int, default=64)
    p.add_argument("--reducer", default="umap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="benchmarks/results/work/synthesis_probe")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    work = Path(args.work)
    start = time.perf_counter()

    base = str(default_teacher_path())
    tokenizer = AutoTokenizer.from_pretrained(base)
    data = load_task_data(args.task, glue_dir=args.glue_dir)
    data.subsample(args.n, 872, seed=args.seed)
    tokenized = tokenize_task(data, tokenizer, args.max_seq_length)
    targs = SageTrainingArguments(output_dir=str(work), use_cpu=not torch.cuda.is_available(), report_to=[],
                                  disable_tqdm=True, seed=args.seed, dataloader_pin_memory=False)
    if args.teacher:
        from transformers import AutoModelForSequenceClassification

        teacher_model, teacher_results = AutoModelForSequenceClassification.from_pretrained(args.teacher), None
    else:
        stage = teacher_stage(data, tokenized, tokenizer, targs, base_model=base, max_seq_length=args.max_seq_length,
                              epochs=2.0, learning_rate=5e-5)
        teacher_model, teacher_results = stage.model, stage.results
    teacher = TeacherInterface(teacher_model.eval())
    student = SageStudentForSequenceClassification.from_teacher(teacher, layers=[0, 2, 4])
    train = tokenized["train"]
    kd_args = SageTrainingArguments(output_dir=str(work / "kd"), sage=False, hidden_loss="none", num_train_epochs=1,
                                    learning_rate=1e-4, per_device_train_batch_size=32, report_to=[],
                                    disable_tqdm=True, seed=args.seed, save_strategy="no", use_cpu=targs.use_cpu,
                                    dataloader_pin_memory=False)
    SageTrainer(model=student, args=kd_args, teacher_model=teacher, train_dataset=train,
                processing_class=tokenizer).train()
    student.eval()

    features = {c: train[c] for c in ("input_ids", "attention_mask", "token_type_ids") if c in train.column_names}
    logits = torch.cat([teacher.forward(**{k: v for k, v in batch.items() if k != "labels"}).float()
                        for batch in _batches(features, 128)])
    rows = []
    for method in args.methods:
        settings = VARIANTS.get(method, {"synthesis": method})
        sargs = SageTrainingArguments(output_dir=str(work / method), **settings, synthetic_count=args.anchors,
                                      synthesis_mode="replace", reducer=args.reducer, n_neighbors=50,
                                      seed=args.seed, use_cpu=targs.use_cpu, report_to=[])
        engine = SageEngine(teacher, features, logits, None, RoundConfig.from_args(sargs),
                            map_cache_dir=str(work / "maps"), map_key="synthesis_probe")
        losses, agreement = engine.score(student)
        t0 = time.perf_counter()
        engine.run_round(student, losses, agreement, epoch=1.0)
        stats = probe(engine, student, range(len(engine.buffer)))
        rows.append({"method": method, "round_seconds": time.perf_counter() - t0, **stats})
        print(json.dumps(rows[-1]), flush=True)

    header = ("| synthesis | teacher KL anchor->synthetic (median / mean) | teacher label flips | teacher's last "
              "class at anchors / at synthetic | student-teacher KL at synthetic / at anchors | token move / token "
              "norm (median) | round s |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['teacher_kl_anchor_to_synthetic_median']:.4f} / "
                     f"{r['teacher_kl_anchor_to_synthetic_mean']:.4f} | {100 * r['teacher_label_flips']:.1f}% | "
                     f"{100 * r['teacher_last_class_at_anchors']:.1f}% / "
                     f"{100 * r['teacher_last_class_at_synthetic']:.1f}% | "
                     f"{r['student_teacher_kl_at_synthetic']:.4f} / {r['student_teacher_kl_at_anchors']:.4f} | "
                     f"{r['token_move_relative_median']:.3f} | {r['round_seconds']:.1f} |")
    table = "\n".join(lines)
    print(table)
    report = {"settings": vars(args), "teacher": teacher_results, "rows": rows, "table": table,
              "machine": f"{platform.machine()} {platform.processor()} threads={torch.get_num_threads()}",
              "seconds": time.perf_counter() - start}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


def _batches(features, size):
    from sage_hf import SageDataCollator

    collate = SageDataCollator()
    n = len(features["input_ids"])
    for s in range(0, n, size):
        yield collate([{k: v[i] for k, v in features.items()} for i in range(s, min(n, s + size))])


if __name__ == "__main__":
    main()
