"""Which student for the `tiny` profile? Trains each candidate on the same data, prints a table.

Candidates (both much smaller than the 135M teacher):
- `subset-L`: the teacher cut down to L evenly spaced layers (DistilBERT-style initialisation);
- `t5-scratch`: a small T5 from scratch with a word-level tokenizer trained on the task's text.

Data: the `tiny` profile's training inputs with the bundled teacher's rationales, read from the
committed teacher cache (no generation needed), in `dss` mode; scored on the `tiny` test inputs.
Run: `.venv/bin/python benchmarks/student_candidates.py [--n-train 400] [--n-test 100]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from utils.config import load_config
    from utils.data import build_rationale_dataset
    from utils.evaluation import evaluate_student
    from utils.loaders import load_task, select_examples
    from utils.models import count_parameters, load_model, load_tokenizer, make_t5_student
    from utils.student import prepare_student_init, train_student
    from utils.teacher import annotate, teacher_from_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--mode", default="dss")
    args = parser.parse_args()

    base = load_config("tiny", n_train=args.n_train, n_test=args.n_test)
    work = Path(tempfile.mkdtemp(prefix="candidates-"))
    teacher = teacher_from_config(base)
    train = select_examples(base.task, "train", base.n_train, base.max_ops)
    test = select_examples(base.task, "test", base.n_test, base.max_ops)
    records = annotate(teacher, base, train, work / "cache.jsonl", "train")
    dataset = build_rationale_dataset(records, base.task, base.rationale_policy, test)

    corpus = ["[label] [rationale]"] + [f"{ex['input']} {ex['equation']}" for ex in load_task(base.task, "train")]
    corpus += [r for r in dataset["train"]["rationale"] if r]
    candidates = {
        "subset-6 (causal)": (base, prepare_student_init(base)),
        "subset-4 (causal)": (load_config("tiny", student_layers=4), None),
        "t5-scratch (seq2seq)": (load_config("tiny", student_family="seq2seq", epochs=24.0, learning_rate=1e-3),
                                 str(make_t5_student(corpus, work / "t5-init"))),
    }
    rows = []
    for name, (config, init) in candidates.items():
        init = init or prepare_student_init(config)
        result = train_student(dataset, config, args.mode, work / name.split()[0], init=init)
        model = load_model(result.output_dir, config.student_family)
        scored = evaluate_student(model, load_tokenizer(result.output_dir), dataset["test"], config.student_family)
        minutes = result.train_seconds / 60
        rows.append((name, count_parameters(model) / 1e6, config.epochs, result.train_seconds,
                     100 * scored["accuracy"], 100 * scored["accuracy"] / minutes))
        print(f"done: {name}", flush=True)

    print(f"\nStudents on `tiny` ({args.mode} mode, {len(dataset['train'])} train / {len(dataset['test'])} test inputs),"
          f" {time.strftime('%Y-%m-%d')}")
    print("| candidate | params (M) | epochs | train (s) | test accuracy (%) | accuracy points per train minute |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, params, epochs, seconds, acc, per_min in rows:
        print(f"| {name} | {params:.1f} | {epochs:g} | {seconds:.0f} | {acc:.1f} | {per_min:.1f} |")


if __name__ == "__main__":
    main()
