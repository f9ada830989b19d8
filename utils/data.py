"""Teacher records become a Hugging Face ``DatasetDict`` the student trains on.

Columns: ``id, input, label, teacher_label, rationale, teacher_correct``. ``label`` is the gold
label, ``teacher_label`` the teacher's voted answer, ``rationale`` the teacher rationale kept by
the policy (empty when none is kept, so that row trains the label task only).

Records come from our own teacher (``utils.teacher.generate_rationales``) or from the paper's
released PaLM rationales (``utils.paper_data.load_paper_rationales``); both have the same shape. This module also
subsamples training fractions (``subsample``), writes a dataset card (``save_dataset``) and exports
the dataset for Hugging Face AutoTrain (``export_autotrain``).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from utils.prompting import LABEL_PREFIX, RATIONALE_PREFIX, check_columns
from utils.tasks import Task, get_task

COLUMNS = ("id", "input", "label", "teacher_label", "rationale", "rationale_label", "teacher_correct")
POLICIES = {
    "all": "keep all: every row keeps the teacher's rationale that agrees with its vote, right or wrong",
    "correct": "keep teacher-correct only: a row keeps a rationale only if its answer equals the gold label; "
    "the other rows keep their label and get an empty rationale, or are dropped with drop_incorrect=True",
    "gold": "relabel with gold: like 'correct', and the teacher label replaced by the gold one",
}
PAPER_FRACTIONS = (0.125, 0.25, 0.5, 1.0)  # the training-data fractions of the paper's figures
RECORD_FIELDS = ("id", "input", "gold", "teacher_label", "rationale")
PAPER_RATIONALES_LICENSE = "Apache-2.0 (google-research/distilling-step-by-step, datasets.zip)"
MAX_STRATIFY_CLASSES = 20  # more distinct labels than this are free text (equations), not classes


# --- the dataset ----------------------------------------------------------------------------------


def _test_row(example: dict, index: int, label_field: str) -> dict:
    missing = [k for k in ("id", "input", label_field) if k not in example]
    if missing:
        raise ValueError(
            f"Test example {index} lacks the field(s) {missing}; it has {sorted(example)}. Pass "
            "label_field=get_task(task).label_field ('equation' for arith, 'label' for the paper's tasks)."
        )
    return {
        "id": str(example["id"]),
        "input": example["input"],
        "label": str(example[label_field]),
        "teacher_label": "",
        "rationale": "",
        "teacher_correct": False,
    }


def build_rationale_dataset(
    records: list[dict],
    task: Task | str,
    policy: str = "correct",
    test_examples: list[dict] | None = None,
    label_field: str = "equation",
    drop_incorrect: bool = False,
):
    """A ``DatasetDict`` with a ``train`` split from teacher records and, if given, a ``test`` split.

    ``policy`` picks which rationales are kept (``POLICIES``):

    - ``"all"`` (keep all): every row keeps the rationale that agrees with the teacher's vote,
      right or wrong; a row whose teacher gave no parsable answer gets an empty rationale.
    - ``"correct"`` (keep teacher-correct only): a row keeps a rationale only if one of the teacher's
      answers equals the gold label; the other rows keep their label with an empty rationale (they
      train the label task only), or are dropped entirely with ``drop_incorrect=True``.
    - ``"gold"`` (relabel with gold): like ``"correct"``, and ``teacher_label`` set to the gold label.

    ``label`` is always the gold label. Counts per policy: ``policy_report(records)``. A record or
    test example without a needed field is an error that names it.
    """
    from datasets import Dataset, DatasetDict

    if policy not in POLICIES:
        raise ValueError(f"Unknown rationale policy {policy!r}. Valid policies: {', '.join(POLICIES)}.")
    if drop_incorrect and policy == "all":
        raise ValueError("drop_incorrect=True needs policy 'correct' or 'gold'; policy 'all' keeps every row.")
    needed = RECORD_FIELDS + (() if policy == "all" else ("correct_rationale",))
    rows = []
    for index, record in enumerate(records):
        missing = [k for k in needed if k not in record]
        if missing:
            hint = " (records get it when the examples have gold labels)" if "correct_rationale" in missing else ""
            raise ValueError(
                f"Teacher record {index} lacks the field(s) {missing}{hint}; records come from "
                "utils.teacher.generate_rationales or utils.paper_data.load_paper_rationales."
            )
        if policy == "all":
            rationale = record["rationale"] if record["teacher_label"] is not None else ""
            reached = record["teacher_label"]
        else:
            rationale = record["correct_rationale"] or ""
            if drop_incorrect and not rationale.strip():
                continue
            reached = record["gold"]
        reached = _reached_answer(record, rationale, reached)
        teacher_label = record["gold"] if policy == "gold" else record["teacher_label"]
        rows.append(
            {
                "id": str(record["id"]),
                "input": record["input"],
                "label": str(record["gold"]),
                "teacher_label": str(teacher_label) if teacher_label is not None else "",
                "rationale": (rationale or "").strip(),
                "rationale_label": str(reached) if rationale and reached is not None else "",
                "teacher_correct": bool(record.get("teacher_correct", False)),
            }
        )
    if drop_incorrect and records and not rows:
        raise ValueError(f"Policy {policy!r} with drop_incorrect=True kept no rows: no record has a correct rationale.")
    splits = {"train": Dataset.from_list(rows)}
    if test_examples:
        splits["test"] = Dataset.from_list([_test_row(ex, i, label_field) for i, ex in enumerate(test_examples)])
    return DatasetDict(splits)


def _reached_answer(record: dict, rationale: str, fallback):
    """The answer the kept rationale itself wrote (its sample's parsed label): a rationale kept
    because it reached the gold answer ends with that answer, not with the teacher's vote."""
    for sample in record.get("samples") or ():
        if rationale and sample.get("rationale") == rationale and sample.get("label") is not None:
            return sample["label"]
    return fallback


def policy_counts(records: list[dict]) -> dict[str, int]:
    """How many training rows get a rationale under each policy."""
    return {
        "examples": len(records),
        "all": sum(1 for r in records if r["teacher_label"] is not None and r["rationale"]),
        "correct": sum(1 for r in records if r.get("correct_rationale")),
        "gold": sum(1 for r in records if r.get("correct_rationale")),
    }


def policy_report(records: list[dict]) -> dict:
    """What each policy would build from ``records``: rows, rows with a rationale, rows relabelled.

    The counts are those of ``build_rationale_dataset`` (``rows`` = training rows it would keep;
    ``relabelled`` = rows whose teacher answer was wrong or missing and that carry the gold label
    as ``teacher_label`` under ``gold``).
    """
    n = len(records)
    with_all = sum(1 for r in records if r["teacher_label"] is not None and (r["rationale"] or "").strip())
    with_correct = sum(1 for r in records if (r.get("correct_rationale") or "").strip())
    teacher_correct = sum(1 for r in records if r.get("teacher_correct"))
    return {
        "examples": n,
        "parsed": sum(1 for r in records if r["teacher_label"] is not None),
        "parse_failures": sum(r.get("parse_failures", 0) for r in records),
        "teacher_correct": teacher_correct,
        "teacher_accuracy": teacher_correct / n if n else 0.0,
        "policies": {
            "all": {"rows": n, "with_rationale": with_all, "relabelled": 0},
            "correct": {"rows": n, "with_rationale": with_correct, "relabelled": 0},
            "correct+drop_incorrect": {"rows": with_correct, "with_rationale": with_correct, "relabelled": 0},
            "gold": {"rows": n, "with_rationale": with_correct, "relabelled": n - teacher_correct},
            "gold+drop_incorrect": {
                "rows": with_correct,
                "with_rationale": with_correct,
                "relabelled": sum(
                    1 for r in records if (r.get("correct_rationale") or "").strip() and not r.get("teacher_correct")
                ),
            },
        },
    }


# --- training-data fractions ---------------------------------------------------------------------


def _take(count: int, fraction: float) -> int:
    """How many of ``count`` items a fraction keeps: rounded half up, at least one (monotonic in fraction)."""
    return min(count, max(1, math.floor(fraction * count + 0.5))) if count else 0


def subsample(dataset, fraction: float, seed: int, label_column: str = "label", stratify: bool | None = None):
    """A deterministic ``fraction`` of a ``Dataset`` (or of the ``train`` split of a ``DatasetDict``).

    ``stratify=None`` decides by the labels: stratified (each label keeps its share) when there are
    at most 20 distinct labels and each appears at least twice, a plain random subset otherwise
    (equation labels). Subsets are nested: for the same seed, the 12.5% subset lies inside the
    25% one, which lies inside the 50% one, so fractions compare like with like. Rows keep their
    original order. (The paper drew each fraction independently with ``train_test_split``.)
    """
    from datasets import DatasetDict

    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}; the paper used {PAPER_FRACTIONS}.")
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise ValueError(f"subsample needs a 'train' split; the DatasetDict has {list(dataset)}.")
        return DatasetDict(
            {
                name: subsample(part, fraction, seed, label_column, stratify) if name == "train" else part
                for name, part in dataset.items()
            }
        )
    if fraction == 1:
        return dataset
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(dataset)
    if stratify is None or stratify:
        if label_column not in dataset.column_names:
            raise ValueError(
                f"subsample: no label column {label_column!r}; the dataset has {dataset.column_names}. "
                "Pass label_column=..., or stratify=False."
            )
        labels = [str(x) for x in dataset[label_column]]
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        if stratify is None:
            stratify = len(counts) <= MAX_STRATIFY_CLASSES and min(counts.values(), default=0) >= 2
    if not stratify:
        order = rng.permutation(n)
        keep = order[: _take(n, fraction)]
    else:
        keep = []
        for label in sorted(counts):  # a fixed class order, so the draw depends on the seed only
            members = np.array([i for i, x in enumerate(labels) if x == label])
            keep.extend(members[rng.permutation(len(members))][: _take(len(members), fraction)])
    return dataset.select(sorted(int(i) for i in keep))


# --- saving, the dataset card --------------------------------------------------------------------


def _word_stats(texts: list[str]) -> dict:
    lengths = [len(t.split()) for t in texts if t and t.strip()]
    if not lengths:
        return {"count": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {
        "count": len(lengths),
        "mean": round(statistics.fmean(lengths), 1),
        "median": statistics.median(lengths),
        "max": max(lengths),
    }


# Hub license ids of the licenses the task specs quote (by the start of the quoted text)
HUB_LICENSES = (("apache-2.0", "apache-2.0"), ("mit", "mit"), ("cc by-nc 4.0", "cc-by-nc-4.0"))


def _hub_license(text: str | None) -> str:
    """The Hub's license id for a license as the task specs quote it (``other`` when unknown)."""
    lowered = (text or "").lower()
    return next((hub for start, hub in HUB_LICENSES if lowered.startswith(start)), "other")


def _size_category(rows: int) -> str:
    """The Hub's size bucket for a dataset of ``rows`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "n>1M"


def _dataset_card_data(dataset, info: dict, spec):
    """The card's metadata (``huggingface_hub.DatasetCardData``): licenses of the inputs and of
    the rationales, size, task categories, the source dataset on the Hub."""
    from huggingface_hub import DatasetCardData

    task = info.get("task")
    rationale_license = "apache-2.0"  # the paper's released rationales and the course's own both are
    licenses = list(dict.fromkeys([_hub_license(spec.license if spec else None), rationale_license]))
    return DatasetCardData(
        pretty_name=f"Distilling step-by-step rationales: {task or 'unknown task'}",
        language=["en"], license=licenses[0] if len(licenses) == 1 else licenses,
        size_categories=[_size_category(sum(len(part) for part in dataset.values()))],
        task_categories=["text-generation", "text2text-generation"],
        source_datasets=[spec.hub_id] if spec and spec.hub_id else None,
        tags=["distilling-step-by-step", "rationales", "chain-of-thought", *([task] if task else [])],
    )


def _dataset_card_text(dataset, info: dict, spec) -> str:
    """The Markdown body of the dataset card: splits, teacher, rationale lengths, source and license."""
    task = info.get("task")
    lines = [f"# Rationale dataset: {task or 'unknown task'}", ""]
    lines += [
        "Written by `utils.data.save_dataset` (load it with `utils.data.load_dataset_from_run`). Columns: "
        "`id`, `input`, `label` (gold), `teacher_label`, `rationale` (empty: that row trains the label "
        "task only), `teacher_correct`.",
        "",
        "## Splits",
        "",
        "| split | rows | with rationale | teacher correct |",
        "|---|---|---|---|",
    ]
    for name, part in dataset.items():
        rationales = part["rationale"] if "rationale" in part.column_names else []
        correct = sum(part["teacher_correct"]) if "teacher_correct" in part.column_names else 0
        lines.append(f"| {name} | {len(part)} | {sum(1 for r in rationales if r)} | {correct} |")
    train = dataset["train"] if "train" in dataset else None
    lines += ["", "## Teacher", ""]
    if train is not None and len(train) and "teacher_correct" in train.column_names:
        correct = sum(train["teacher_correct"])
        lines.append(f"Teacher accuracy on train: {correct}/{len(train)} = {correct / len(train):.1%}.")
    if info.get("policy"):
        lines.append(f"Rationale policy: `{info['policy']}` ({POLICIES.get(info['policy'], '')}).")
    stats = _word_stats(train["rationale"] if train is not None and "rationale" in train.column_names else [])
    lines += [
        "",
        "## Rationale length (words, train, non-empty rationales)",
        "",
        "| rationales | mean | median | max |",
        "|---|---|---|---|",
        f"| {stats['count']} | {stats['mean']} | {stats['median']} | {stats['max']} |",
        "",
        "## Source and license",
        "",
        *_source_lines(info, spec),
        "",
        "Distilling Step-by-Step: Hsieh et al. (2023), arXiv 2305.02301.",
        "",
    ]
    return "\n".join(lines)


def _source_lines(info: dict, spec) -> list[str]:
    """Where the inputs, labels and rationales come from, and under which licenses."""
    if spec is None:
        lines = ["- Inputs and labels: unknown task; check the license of its source."]
    elif spec.name == "arith":
        lines = [f"- Inputs and labels: the course's synthetic `arith` problems, generated here; {spec.license}."]
    else:
        lines = [f"- Inputs and labels: {spec.description} Source: {spec.citation} License: {spec.license}."]
        if spec.hub_id:
            lines.append(f"  Hub copy: `{spec.hub_id}`.")
    if info.get("rationale_source") == "paper":
        lines.append(f"- Rationales: the paper's released PaLM 540B rationales, {PAPER_RATIONALES_LICENSE}.")
        return lines
    model = info.get("teacher_model", "the course's teacher model")
    lines.append(f"- Rationales: generated by this course's teacher ({model}); released with the course, Apache-2.0.")
    if spec is not None and spec.name != "arith":
        lines.append(f"  The paper's own rationales for this task are {PAPER_RATIONALES_LICENSE}.")
    return lines


def dataset_card(dataset, info: dict | None = None) -> str:
    """The dataset card (``README.md``): a ``huggingface_hub.DatasetCard`` whose metadata block holds
    the licenses, size and source, and whose text gives counts per split, teacher accuracy,
    rationale lengths, source and license.

    ``info`` may name the ``task``, the ``policy`` and the ``rationale_source`` (``"paper"`` for the
    authors' released rationales, else the course's own teacher, ``teacher_model``).
    """
    from huggingface_hub import DatasetCard

    info = info or {}
    try:
        spec = get_task(info["task"]) if info.get("task") else None
    except ValueError:
        spec = None
    data = _dataset_card_data(dataset, info, spec)
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{_dataset_card_text(dataset, info, spec)}"))


def save_dataset(dataset, run_dir: str | Path, info: dict | None = None) -> Path:
    """Save under ``run_dir/dataset`` with a JSON card (``card.json``) and a dataset card (``README.md``).

    Everything is written to a folder beside it first and swapped in at the end, so a failure or a
    kill midway leaves the dataset that was there (notebook 03 may be reading it) untouched."""
    import os
    import shutil

    from utils.config import atomic_write_json, atomic_write_text

    out = Path(run_dir) / "dataset"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = out.with_name(f".dataset.tmp-{os.getpid()}"), out.with_name(f".dataset.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        dataset.save_to_disk(str(tmp))
        card = {"splits": {k: len(v) for k, v in dataset.items()}, **(info or {})}
        atomic_write_json(tmp / "card.json", card)
        atomic_write_text(tmp / "README.md", dataset_card(dataset, info))
        if out.exists():
            os.replace(out, old)  # a dataset memory-mapped from it keeps reading the old files
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def load_dataset_from_run(run_dir: str | Path):
    """Load what ``save_dataset`` wrote."""
    from datasets import load_from_disk

    path = Path(run_dir) / "dataset"
    if not path.exists():
        raise FileNotFoundError(f"No dataset at {path}: run notebook 02 (or `python -m utils dataset`) first.")
    return load_from_disk(str(path))


# --- Hugging Face AutoTrain export ----------------------------------------------------------------

# Formats follow the AutoTrain Advanced docs:
# - seq2seq: https://huggingface.co/docs/autotrain/tasks/seq2seq ("Your CSV/JSONL dataset must have
#   two columns: text and target"; config example configs/seq2seq/local.yml of huggingface/autotrain-advanced).
# - llm-sft: https://huggingface.co/docs/autotrain/tasks/llm_finetuning (SFT "requires only `text`
#   column"; CSV for text you formatted yourself, JSONL of {"content", "role"} messages when
#   `chat_template` formats it; config example configs/llm_finetuning/smollm2.yml).
# - config file: https://huggingface.co/docs/autotrain/config (`autotrain --config <file>`; keys
#   task, base_model, project_name, log, backend, data: path / train_split / valid_split /
#   column_mapping, params, hub).
AUTOTRAIN_KINDS = ("seq2seq", "llm-sft")
AUTOTRAIN_DEFAULT_MODELS = {"seq2seq": "google/flan-t5-base", "llm-sft": "HuggingFaceTB/SmolLM2-135M-Instruct"}
AUTOTRAIN_CHAT_TEMPLATES = ("tokenizer", "chatml", "zephyr")


def autotrain_rows(split, label_source: str = "gold") -> list[dict]:
    """The (source, target) pairs of the multi-task student: ``[label] <input>`` -> label and
    ``[rationale] <input>`` -> rationale, the same prefixes as ``utils.student``."""

    column = {"gold": "label", "teacher": "teacher_label"}.get(label_source)
    if column is None:
        raise ValueError(f"Unknown label_source {label_source!r}. Valid choices: gold, teacher.")
    rows = []
    for ex in split:
        if ex[column]:
            rows.append({"source": LABEL_PREFIX + ex["input"], "target": ex[column]})
        if ex["rationale"]:
            rows.append({"source": RATIONALE_PREFIX + ex["input"], "target": ex["rationale"]})
    return rows


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def export_autotrain(
    dataset,
    out_dir: str | Path,
    kind: str = "seq2seq",
    base_model: str | None = None,
    project_name: str | None = None,
    label_source: str = "gold",
    chat_template: str | None = None,
) -> str:
    """Write the dataset in Hugging Face AutoTrain's format plus an ``autotrain.yml``; return the CLI command.

    ``kind="seq2seq"``: ``train.csv`` with columns ``text, target``, two rows per example (the
    ``[label]`` and ``[rationale]`` tasks; the rationale row only where there is a rationale).
    ``kind="llm-sft"``: one ``text`` column. Without ``chat_template`` each row is the plain prompt and
    completion the course's causal student trains on (``<prefix><input>\\n<target>``) in a CSV; with
    ``chat_template`` ("tokenizer", "chatml", "zephyr") each row is a user / assistant message list in
    ``train.jsonl`` and AutoTrain applies the template. A ``test`` split becomes ``validation.*``.
    AutoTrain's multi-task loss is not the paper's alpha-weighted one: both tasks count equally.
    """
    import yaml
    from datasets import DatasetDict

    if kind not in AUTOTRAIN_KINDS:
        raise ValueError(f"Unknown AutoTrain kind {kind!r}. Valid choices: {', '.join(AUTOTRAIN_KINDS)}.")
    if chat_template is not None and (kind != "llm-sft" or chat_template not in AUTOTRAIN_CHAT_TEMPLATES):
        raise ValueError(
            f"chat_template={chat_template!r} needs kind='llm-sft' and one of {', '.join(AUTOTRAIN_CHAT_TEMPLATES)}."
        )
    if not isinstance(dataset, DatasetDict):
        dataset = DatasetDict({"train": dataset})
    if "train" not in dataset:
        raise ValueError(f"export_autotrain needs a 'train' split; the dataset has {list(dataset)}.")
    check_columns(dataset, ("input", "label", "teacher_label", "rationale"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"train": "train"} | ({"test": "validation"} if "test" in dataset else {})
    counts = {}
    for split, name in files.items():
        rows = autotrain_rows(dataset[split], label_source)
        counts[name] = len(rows)
        if kind == "seq2seq":
            _write_csv(out / f"{name}.csv", ["text", "target"], [[r["source"], r["target"]] for r in rows])
        elif chat_template is None:
            _write_csv(out / f"{name}.csv", ["text"], [[f"{r['source']}\n{r['target']}"] for r in rows])
        else:
            with (out / f"{name}.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
                for r in rows:
                    messages = [{"content": r["source"], "role": "user"}, {"content": r["target"], "role": "assistant"}]
                    handle.write(json.dumps({"text": messages}, ensure_ascii=False) + "\n")
    if kind == "seq2seq":
        column_mapping = {"text_column": "text", "target_column": "target"}
        params = {
            "max_seq_length": 512,
            "max_target_length": 256,
            "epochs": 3,
            "batch_size": 8,
            "lr": 5e-5,
            "optimizer": "adamw_torch",
            "scheduler": "linear",
            "gradient_accumulation": 1,
            "mixed_precision": "none",
        }
    else:
        column_mapping = {"text_column": "text"}
        params = {
            "block_size": 1024,
            "model_max_length": 1024,
            "epochs": 3,
            "batch_size": 2,
            "lr": 2e-5,
            "peft": False,
            "padding": "right",
            "optimizer": "adamw_torch",
            "scheduler": "linear",
            "gradient_accumulation": 4,
            "mixed_precision": "none",
        }
    data = {"path": str(out.resolve()), "train_split": "train", "valid_split": files.get("test")}
    if kind == "llm-sft":
        data["chat_template"] = chat_template
    data["column_mapping"] = column_mapping
    config = {
        "task": kind,
        "base_model": base_model or AUTOTRAIN_DEFAULT_MODELS[kind],
        "project_name": project_name or f"dss-{kind}",
        "log": "tensorboard",
        "backend": "local",
        "data": data,
        "params": params,
        "hub": {"username": "${HF_USERNAME}", "token": "${HF_TOKEN}", "push_to_hub": False},
    }
    header = (
        "# Hugging Face AutoTrain Advanced config written by utils.data.export_autotrain\n"
        "# (schema: https://huggingface.co/docs/autotrain/config). Rows per file: "
        + ", ".join(f"{k}={v}" for k, v in counts.items())
        + "\n# Set mixed_precision: bf16 (or fp16) on a GPU; set hub.push_to_hub: true to upload the model.\n"
    )
    path = out / "autotrain.yml"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return f"autotrain --config {path.resolve()}"
