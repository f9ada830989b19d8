"""utils/data.py: rationale policies and their counts, column errors, training fractions, the dataset
card and the Hugging Face AutoTrain export."""

import csv
import json

import pytest
import yaml
from datasets import Dataset, DatasetDict

from utils.data import (
    COLUMNS,
    PAPER_FRACTIONS,
    POLICIES,
    build_rationale_dataset,
    check_columns,
    export_autotrain,
    policy_counts,
    policy_report,
    save_dataset,
    subsample,
)


def _record(i, gold, teacher_label, rationale, correct):
    """A teacher record in the shape utils.teacher.generate_rationales returns."""
    sample = {"text": f"{rationale} The answer is {teacher_label}.", "rationale": rationale, "label": teacher_label}
    return {
        "id": f"arith-train-{i:04d}",
        "input": f"Problem {i}?",
        "gold": gold,
        "samples": [sample | {"error": None if teacher_label else "no number"}],
        "teacher_label": teacher_label,
        "votes": int(teacher_label is not None),
        "rationale": rationale,
        "parse_failures": int(teacher_label is None),
        "teacher_correct": correct,
        "correct_rationale": rationale if correct else None,
        "greedy_correct": correct,
    }


@pytest.fixture
def records():
    return [
        _record(0, "( 2 + 3 )", "( 2 + 3 )", "Two and three make 5.", True),
        _record(1, "( 4 * 5 )", "( 5 * 4 )", "Four fives are 20.", True),
        _record(2, "( 9 - 4 )", "( 9 + 4 )", "Nine and four make 13.", False),
        _record(3, "( 8 / 2 )", None, "I am not sure", False),
        _record(4, "( 6 + 1 )", "( 6 + 2 )", "Six and two make 8.", False),
    ]


TEST_EXAMPLES = [{"id": "arith-test-0000", "input": "Test?", "equation": "( 1 + 1 )", "answer": 2}]


# --- policies ----------------------------------------------------------------------------------------


def test_policy_all_keeps_every_voted_rationale(records):
    train = build_rationale_dataset(records, "arith", "all")["train"]
    assert train.column_names == list(COLUMNS)
    assert train["rationale"] == [
        "Two and three make 5.",
        "Four fives are 20.",
        "Nine and four make 13.",
        "",
        "Six and two make 8.",
    ]
    assert train["label"] == [r["gold"] for r in records]
    assert train["teacher_label"] == ["( 2 + 3 )", "( 5 * 4 )", "( 9 + 4 )", "", "( 6 + 2 )"]


def test_policy_correct_keeps_labels_and_blanks_wrong_rationales(records):
    train = build_rationale_dataset(records, "arith", "correct")["train"]
    assert len(train) == 5
    assert train["rationale"] == ["Two and three make 5.", "Four fives are 20.", "", "", ""]
    assert train["teacher_correct"] == [True, True, False, False, False]


def test_drop_incorrect_drops_rows_without_a_correct_rationale(records):
    train = build_rationale_dataset(records, "arith", "correct", drop_incorrect=True)["train"]
    assert train["id"] == ["arith-train-0000", "arith-train-0001"]
    gold = build_rationale_dataset(records, "arith", "gold", drop_incorrect=True)["train"]
    assert gold["teacher_label"] == gold["label"] == ["( 2 + 3 )", "( 4 * 5 )"]
    with pytest.raises(ValueError, match="drop_incorrect"):
        build_rationale_dataset(records, "arith", "all", drop_incorrect=True)


def test_policy_gold_relabels_with_gold(records):
    train = build_rationale_dataset(records, "arith", "gold", TEST_EXAMPLES)["train"]
    assert train["teacher_label"] == train["label"]
    assert train["rationale"] == ["Two and three make 5.", "Four fives are 20.", "", "", ""]


def test_test_split_and_policy_descriptions(records):
    dataset = build_rationale_dataset(records, "arith", "correct", TEST_EXAMPLES)
    assert dataset["test"][0] == {
        "id": "arith-test-0000",
        "input": "Test?",
        "label": "( 1 + 1 )",
        "teacher_label": "",
        "rationale": "",
        "teacher_correct": False,
    }
    assert set(POLICIES) == {"all", "correct", "gold"}
    assert "keep all" in POLICIES["all"] and "teacher-correct" in POLICIES["correct"]
    assert "drop_incorrect" in POLICIES["correct"] and "gold" in POLICIES["gold"]


def test_policy_report_matches_the_built_datasets(records):
    report = policy_report(records)
    assert (report["examples"], report["parsed"], report["parse_failures"], report["teacher_correct"]) == (5, 4, 1, 2)
    assert report["teacher_accuracy"] == pytest.approx(0.4)
    variants = {
        "all": ("all", False),
        "correct": ("correct", False),
        "correct+drop_incorrect": ("correct", True),
        "gold": ("gold", False),
        "gold+drop_incorrect": ("gold", True),
    }
    for name, (policy, drop) in variants.items():
        train = build_rationale_dataset(records, "arith", policy, drop_incorrect=drop)["train"]
        counts = report["policies"][name]
        assert counts["rows"] == len(train), name
        assert counts["with_rationale"] == sum(1 for r in train["rationale"] if r), name
        # Relabelled: rows whose teacher answer was wrong or missing and now carry the gold label.
        relabelled = sum(1 for ok in train["teacher_correct"] if not ok) if policy == "gold" else 0
        assert counts["relabelled"] == relabelled, name
    assert report["policies"]["gold"]["relabelled"] == 3
    assert policy_counts(records) == {"examples": 5, "all": 4, "correct": 2, "gold": 2}


# --- errors that name the field ------------------------------------------------------------------------


def test_missing_record_fields_are_named(records):
    broken = [dict(records[0])]
    del broken[0]["gold"]
    with pytest.raises(ValueError, match=r"Teacher record 0 lacks the field\(s\) \['gold'\]"):
        build_rationale_dataset(broken, "arith", "all")
    no_gold = [{k: v for k, v in records[0].items() if k != "correct_rationale"}]
    build_rationale_dataset(no_gold, "arith", "all")  # policy 'all' does not need it
    with pytest.raises(ValueError, match="correct_rationale"):
        build_rationale_dataset(no_gold, "arith", "correct")
    with pytest.raises(ValueError, match="Unknown rationale policy 'best'"):
        build_rationale_dataset(records, "arith", "best")


def test_misnamed_test_label_field_is_named(records):
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['label'\].*label_field"):
        build_rationale_dataset(records, "arith", "correct", TEST_EXAMPLES, label_field="label")


def test_check_columns_names_the_missing_column(records):
    dataset = build_rationale_dataset(records, "arith").remove_columns("rationale")
    with pytest.raises(ValueError, match=r"\['rationale'\]"):
        check_columns(dataset)


# --- training fractions -----------------------------------------------------------------------------------


def _classes(counts: dict[str, int]) -> Dataset:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return Dataset.from_dict({"id": [str(i) for i in range(len(labels))], "label": labels})


def _equations(n: int) -> Dataset:
    return Dataset.from_dict({"id": [str(i) for i in range(n)], "label": [f"( {i} + 1 )" for i in range(n)]})


def test_subsample_is_deterministic():
    data = _equations(200)
    assert subsample(data, 0.25, seed=3)["id"] == subsample(data, 0.25, seed=3)["id"]
    assert subsample(data, 0.25, seed=3)["id"] != subsample(data, 0.25, seed=4)["id"]
    assert len(subsample(data, 0.25, seed=3)) == 50
    assert subsample(data, 1.0, seed=3)["id"] == data["id"]


def test_subsample_stratifies_classes():
    data = _classes({"entailment": 40, "neutral": 24, "contradiction": 16})
    part = subsample(data, 0.25, seed=0)
    assert {label: part["label"].count(label) for label in set(part["label"])} == {
        "entailment": 10,
        "neutral": 6,
        "contradiction": 4,
    }
    rows = [int(i) for i in part["id"]]
    assert rows == sorted(rows)  # original order kept
    plain = subsample(data, 0.25, seed=0, stratify=False)
    assert len(plain) == 20


@pytest.mark.parametrize("make", [lambda: _classes({"a": 33, "b": 21, "c": 9}), lambda: _equations(101)])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_subsample_fractions_are_nested(make, seed):
    data = make()
    subsets = [set(subsample(data, f, seed=seed)["id"]) for f in PAPER_FRACTIONS]
    assert PAPER_FRACTIONS == (0.125, 0.25, 0.5, 1.0)
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert small < large
    assert subsets[-1] == set(data["id"])


def test_subsample_decides_stratification_from_the_labels():
    # A class seen once cannot be stratified: plain shuffle-select, exact size.
    data = _classes({"a": 10, "b": 9, "c": 1})
    assert len(subsample(data, 0.5, seed=0)) == 10
    # More than 20 distinct labels are free text: plain.
    assert len(subsample(_classes({f"l{i}": 2 for i in range(30)}), 0.5, seed=0)) == 30


def test_subsample_dataset_dict_touches_train_only():
    data = DatasetDict({"train": _equations(80), "test": _equations(10)})
    part = subsample(data, 0.125, seed=0)
    assert (len(part["train"]), len(part["test"])) == (10, 10)


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, True, "0.5", None])
def test_subsample_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        subsample(_equations(10), fraction, seed=0)


def test_subsample_names_a_missing_label_column():
    data = _equations(10).rename_column("label", "target")
    with pytest.raises(ValueError, match="'label'.*'target'"):
        subsample(data, 0.5, seed=0)
    assert len(subsample(data, 0.5, seed=0, stratify=False)) == 5
    assert len(subsample(data, 0.5, seed=0, label_column="target")) == 5
    with pytest.raises(ValueError, match="'train' split"):
        subsample(DatasetDict({"test": data}), 0.5, seed=0)


# --- the dataset card -------------------------------------------------------------------------------------


def test_save_dataset_writes_a_card(tmp_path, records):
    dataset = build_rationale_dataset(records, "arith", "correct", TEST_EXAMPLES)
    out = save_dataset(dataset, tmp_path, {"task": "arith", "policy": "correct"})
    assert json.loads((out / "card.json").read_text())["splits"] == {"train": 5, "test": 1}
    card = (out / "README.md").read_text()
    assert "| train | 5 | 2 | 2 |" in card and "| test | 1 | 0 | 0 |" in card
    assert "Teacher accuracy on train: 2/5 = 40.0%" in card
    # Rationales kept: "Two and three make 5." (5 words) and "Four fives are 20." (4 words).
    assert "| 2 | 4.5 | 4.5 | 5 |" in card
    assert "generated here" in card and "Apache-2.0" in card


def test_saving_again_replaces_the_dataset_and_a_failed_save_keeps_the_old_one(tmp_path, records, monkeypatch):
    """A second save replaces the folder whole, even over the dataset it was loaded from; a save that
    fails midway (here: writing the card) leaves the previous dataset as it was, and no temporary folder."""
    import utils.data as data_module
    from utils.data import load_dataset_from_run

    save_dataset(build_rationale_dataset(records, "arith", "correct", TEST_EXAMPLES), tmp_path, {"task": "arith"})
    loaded = load_dataset_from_run(tmp_path)  # memory-mapped from the folder it is saved over
    out = save_dataset(loaded.filter(lambda row: bool(row["rationale"])), tmp_path, {"task": "arith"})
    assert json.loads((out / "card.json").read_text())["splits"] == {"train": 2, "test": 0}

    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(data_module, "dataset_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        save_dataset(build_rationale_dataset(records, "arith", "all", TEST_EXAMPLES), tmp_path, {"task": "arith"})
    assert len(load_dataset_from_run(tmp_path)["train"]) == 2  # the previous save, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


@pytest.mark.parametrize(
    ("task", "license_text"),
    [("svamp", "MIT"), ("cqa", "MIT"), ("esnli", "MIT"), ("anli1", "CC BY-NC 4.0")],
)
def test_card_cites_the_paper_tasks_licenses(tmp_path, records, task, license_text):
    dataset = build_rationale_dataset(records, task, "all")
    out = save_dataset(dataset, tmp_path, {"task": task, "rationale_source": "paper"})
    card = (out / "README.md").read_text()
    assert f"License: {license_text}" in card
    assert "PaLM" in card and "Apache-2.0 (google-research/distilling-step-by-step" in card


# --- AutoTrain export --------------------------------------------------------------------------------------


def _read_csv(path):
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def test_export_autotrain_seq2seq(tmp_path, records):
    from utils.prompting import LABEL_PREFIX, RATIONALE_PREFIX

    dataset = build_rationale_dataset(records, "arith", "correct", TEST_EXAMPLES)
    command = export_autotrain(dataset, tmp_path / "at", "seq2seq")
    header, rows = _read_csv(tmp_path / "at" / "train.csv")
    # Documented format: columns text and target.
    assert header == ["text", "target"]
    assert len(rows) == 5 + 2  # a label row per example, a rationale row per kept rationale
    assert rows[0] == [LABEL_PREFIX + "Problem 0?", "( 2 + 3 )"]
    assert rows[1] == [RATIONALE_PREFIX + "Problem 0?", "Two and three make 5."]
    assert sum(r[0].startswith(LABEL_PREFIX) for r in rows) == len(dataset["train"])
    assert (
        sum(r[0].startswith(RATIONALE_PREFIX) for r in rows)
        == policy_report(records)["policies"]["correct"]["with_rationale"]
    )
    assert _read_csv(tmp_path / "at" / "validation.csv")[1] == [[LABEL_PREFIX + "Test?", "( 1 + 1 )"]]

    config_path = tmp_path / "at" / "autotrain.yml"
    assert command == f"autotrain --config {config_path.resolve()}"
    config = yaml.safe_load(config_path.read_text())
    assert {"task", "base_model", "project_name", "log", "backend", "data", "params"} <= set(config)
    assert config["task"] == "seq2seq" and config["backend"] == "local"
    data = config["data"]
    assert data["path"] == str((tmp_path / "at").resolve())
    assert (data["train_split"], data["valid_split"]) == ("train", "validation")
    assert data["column_mapping"] == {"text_column": "text", "target_column": "target"}
    assert set(data["column_mapping"].values()) <= set(header)
    assert config["params"]["epochs"] > 0 and config["hub"]["push_to_hub"] is False


def test_export_autotrain_llm_sft_plain_and_chat(tmp_path, records):
    dataset = build_rationale_dataset(records, "arith", "all")  # no test split: no validation file
    export_autotrain(dataset["train"], tmp_path / "plain", "llm-sft", label_source="teacher")
    header, rows = _read_csv(tmp_path / "plain" / "train.csv")
    assert header == ["text"]
    assert len(rows) == 4 + 4  # teacher labels (one parse failure has none) + rationales
    assert rows[0] == ["[label] Problem 0?\n( 2 + 3 )"]
    assert not (tmp_path / "plain" / "validation.csv").exists()
    config = yaml.safe_load((tmp_path / "plain" / "autotrain.yml").read_text())
    assert config["task"] == "llm-sft" and config["data"]["valid_split"] is None
    assert config["data"]["chat_template"] is None
    assert config["data"]["column_mapping"] == {"text_column": "text"}

    export_autotrain(dataset, tmp_path / "chat", "llm-sft", chat_template="tokenizer", base_model="Qwen/Qwen2.5-0.5B")
    lines = (tmp_path / "chat" / "train.jsonl").read_text().splitlines()
    first = json.loads(lines[0])["text"]
    assert [m["role"] for m in first] == ["user", "assistant"] and first[1]["content"] == "( 2 + 3 )"
    assert len(lines) == 5 + 4
    config = yaml.safe_load((tmp_path / "chat" / "autotrain.yml").read_text())
    assert config["data"]["chat_template"] == "tokenizer" and config["base_model"] == "Qwen/Qwen2.5-0.5B"


def test_export_autotrain_errors(tmp_path, records):
    dataset = build_rationale_dataset(records, "arith")
    with pytest.raises(ValueError, match="Valid choices: seq2seq, llm-sft"):
        export_autotrain(dataset, tmp_path, "text-classification")
    with pytest.raises(ValueError, match="chat_template"):
        export_autotrain(dataset, tmp_path, "seq2seq", chat_template="chatml")
    with pytest.raises(ValueError, match=r"\['rationale'\]"):
        export_autotrain(dataset.remove_columns("rationale"), tmp_path, "seq2seq")
    with pytest.raises(ValueError, match="label_source"):
        export_autotrain(dataset, tmp_path, "seq2seq", label_source="model")
