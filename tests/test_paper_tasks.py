"""utils/paper_data.py and the paper's four tasks: specs, input formatting, parsers, the authors' released
layout (on small fixtures in tests/fixtures/paper_datasets) and the errors a user meets offline."""

import json
import random
import shutil
import socket
import zipfile
from pathlib import Path

import pytest

from utils.data import build_rationale_dataset
from utils.loaders import load_task
from utils.paper_data import (
    HubUnavailableError,
    PaperDataUnavailable,
    cqa_choice_text,
    download_paper_data,
    format_cqa,
    format_nli,
    load_hub_split,
    load_paper_rationales,
    paper_example,
    paper_svamp_split,
    read_paper_split,
)
from utils.prompts import format_answer, load_exemplars
from utils.rationales import PARSERS, label_key, majority_vote, parse_cot, parse_cot_detailed
from utils.tasks import ALL_TASK_NAMES, CLASSIFICATION, EQUATION, PAPER_TASK_NAMES, TASK_NAMES, get_task, task_correct

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "paper_datasets"
RECORD_KEYS = {
    "id",
    "input",
    "gold",
    "samples",
    "teacher_label",
    "votes",
    "rationale",
    "parse_failures",
    "teacher_correct",
    "correct_rationale",
    "greedy_correct",
}


# --- specs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "kind", "prefix", "splits", "hub_id"),
    [
        ("svamp", EQUATION, "The answer is", ("train", "test"), "ChilleD/SVAMP"),
        ("cqa", CLASSIFICATION, "So the answer is", ("train", "test"), "tau/commonsense_qa"),
        ("esnli", CLASSIFICATION, "Answer:", ("train", "valid", "test"), "esnli/esnli"),
        ("anli1", CLASSIFICATION, "So the answer is", ("train", "valid", "test"), "facebook/anli"),
    ],
)
def test_paper_task_specs(task, kind, prefix, splits, hub_id):
    spec = get_task(task)
    assert (spec.label_field, spec.kind, spec.answer_prefix) == ("label", kind, prefix)
    assert spec.splits == splits and spec.hub_id == hub_id and spec.license and spec.paper
    assert task in PAPER_TASK_NAMES and task in ALL_TASK_NAMES and spec.parser in PARSERS


def test_bundled_task_list_is_unchanged():
    assert TASK_NAMES == ("arith",)
    assert ALL_TASK_NAMES == ("arith", "svamp", "cqa", "esnli", "anli1")
    with pytest.raises(ValueError, match="Valid choices: arith, svamp, cqa, esnli, anli1"):
        get_task("gsm8k")


# --- formatting -----------------------------------------------------------------------------------


def test_inputs_are_formatted_as_in_the_paper():
    text = format_cqa("Where is milk kept?", ["oven", "fridge", "car", "box", "bag"])
    assert text == "Where is milk kept?\nAnswer Choices:\n(a) oven\n(b) fridge\n(c) car\n(d) box\n(e) bag"
    assert format_nli("A dog runs.", "An animal moves.") == "Premise: A dog runs.\nHypothesis: An animal moves."
    assert cqa_choice_text("(b)", text) == "fridge"
    assert cqa_choice_text("e", text) == "bag"
    assert cqa_choice_text("fridge", text) is None


def test_paper_example_reads_every_shape():
    choices = ["oven", "fridge", "car", "box", "bag"]
    cos_e = {"id": "q1", "question": "Q?", "choices": choices, "answer": "fridge"}
    hub = {"id": "q1", "question": "Q?", "choices": {"label": list("ABCDE"), "text": choices}, "answerKey": "B"}
    assert paper_example("cqa", cos_e, 0, "train") == paper_example("cqa", hub, 0, "train")
    assert paper_example("cqa", hub, 0, "train")["label"] == "fridge"
    nli = paper_example("anli1", {"uid": "u7", "premise": "P.", "hypothesis": "H.", "label": 2}, 3, "test")
    assert nli == {"id": "u7", "input": "Premise: P.\nHypothesis: H.", "label": "contradiction"}
    no_id = paper_example("esnli", {"premise": "P.", "hypothesis": "H.", "label": "Neutral"}, 3, "valid")
    assert no_id["id"] == "esnli-valid-3" and no_id["label"] == "neutral"
    row = {"ID": "chal-9", "Body": "Ann has 3 cats.", "Question": "How many?", "Equation": "( 3.0 )", "Answer": 3.0}
    assert paper_example("svamp", row, 0, "train") == {
        "id": "chal-9",
        "input": "Ann has 3 cats.\nHow many?",
        "label": "( 3.0 )",
        "answer": 3.0,
    }


def test_paper_example_names_missing_fields():
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['hypothesis'\]"):
        paper_example("esnli", {"premise": "P.", "label": 0}, 0, "train", where="esnli_train.json:1")
    with pytest.raises(ValueError, match="answerKey"):
        paper_example("cqa", {"question": "Q?", "choices": ["a", "b"]}, 0, "train")
    with pytest.raises(ValueError, match="not one of 0, 1, 2"):
        paper_example("anli1", {"premise": "P.", "hypothesis": "H.", "label": 7}, 0, "train")


def test_paper_svamp_split_is_the_papers_and_ignores_input_order():
    items = [{"ID": f"chal-{i}", "Body": f"b{i}", "Question": "q", "Equation": "( 1.0 )"} for i in range(1, 1001)]
    split = paper_svamp_split(items)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    assert paper_svamp_split(shuffled) == split
    assert (len(split["train"]), len(split["test"])) == (800, 200)
    assert not {x["ID"] for x in split["train"]} & {x["ID"] for x in split["test"]}
    # The released svamp_train.json starts with chal-994 ("Luke scored 84 points..."), then chal-860.
    assert [x["ID"] for x in split["train"][:2]] == ["chal-994", "chal-860"]
    with pytest.raises(ValueError, match="1000 items"):
        paper_svamp_split(items[:10])


# --- parsers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "text", "rationale", "label"),
    [
        (
            "svamp",
            "Luke scored 84 points in 2 rounds. 84 / 2 = 42. The answer is (84 / 2).\n\nQ: There are 120 "
            "students.\nA: The answer is (120 /",
            "Luke scored 84 points in 2 rounds. 84 / 2 = 42.",
            "( 84 / 2 )",
        ),
        (
            "cqa",
            "Milk spoils when warm. So the answer is (b) fridge.\n\nQ: What is blue?\nAnswer Choices:\n(a) sky\nA: So "
            "the answer is (a) sky.",
            "Milk spoils when warm.",
            "fridge",
        ),
        ("cqa", "Banks keep money. So the answer is (c).", "Banks keep money.", "(c)"),
        ("cqa", "Banks keep money. So the answer is bank", "Banks keep money.", "bank"),
        (
            "anli1",
            "Seville is in Spain. So the answer is contradiction. Premise: The lake froze.\nHypothesis: It was cold.",
            "Seville is in Spain.",
            "contradiction",
        ),
        (
            "anli1",
            "No data on money. So the answer is it is not possible to tell.",
            "No data on money.",
            "it is not possible to tell",
        ),
        (
            "esnli",
            "A girl is a child. Answer: entailment\n\nPremise: A man sleeps.\nHypothesis: He is awake.\nA man who "
            "sleeps is not awake. Answer: contradiction",
            "A girl is a child.",
            "entailment",
        ),
        ("esnli", "Cooks are awake. Answer: contradiction Premise: Kids play.", "Cooks are awake.", "contradiction"),
        ("esnli", "Dogs are animals. So the answer is entailment.", "Dogs are animals.", "entailment"),
    ],
)
def test_parsers_read_each_tasks_raw_shape(task, text, rationale, label):
    parsed = parse_cot_detailed(text, task)
    assert parsed.rationale == rationale
    assert parsed.label == label and parsed.error is None


@pytest.mark.parametrize(
    ("task", "text", "error"),
    [
        ("cqa", "Scissors cut paper, not spoons", "So the answer is"),
        ("anli1", "The museum is closed one day a week", "So the answer is"),
        ("esnli", "The man reads, so", "Answer:"),
        ("esnli", "   ", "empty"),
        ("cqa", "So the answer is .", "nothing after"),
    ],
)
def test_unparsable_classification_outputs_say_why(task, text, error):
    parsed = parse_cot_detailed(text, task)
    assert parsed.label is None and error in parsed.error


def test_label_keys_and_votes_for_classification():
    assert label_key("(b) Bank.", "cqa") == "bank"
    assert label_key("yes", "anli1") == "entailment"
    assert label_key("It is not possible to tell", "esnli") == "neutral"
    assert label_key("banana", "esnli") is None
    assert majority_vote(["Neutral", "contradiction", "maybe", None], "anli1") == ("Neutral", 2)
    assert label_key("( 2 + 3 )", "svamp") == "5"


def test_paper_example_refuses_a_task_that_is_not_the_papers():
    with pytest.raises(ValueError, match="not a paper task. Paper tasks: svamp, cqa, esnli, anli1"):
        paper_example("arith", {"input": "x", "label": "1"}, 0, "train")


@pytest.mark.parametrize("task", PAPER_TASK_NAMES)
def test_exemplars_parse_back_to_their_labels(task):
    spec = load_exemplars(task)
    assert spec["answer_prefix"] == get_task(task).answer_prefix and len(spec["exemplars"]) >= 5
    for shot in spec["exemplars"]:
        rationale, label = parse_cot(format_answer(shot["rationale"], shot["label"], spec["answer_prefix"]), task)
        assert rationale == shot["rationale"]
        gold = cqa_choice_text(shot["label"][:3], shot["input"]) if task == "cqa" else shot["label"]
        assert task_correct(task, label, gold), (label, gold)


# --- the authors' released layout ----------------------------------------------------------------------


def test_load_paper_rationales_svamp_fixture():
    train = load_paper_rationales(FIXTURES, "svamp", "train")
    assert len(train) == 5 and all(set(r) == RECORD_KEYS for r in train)
    # Batches 0 (3 outputs) and 1 (2 outputs) concatenate in order and pair with inputs by position.
    assert [r["teacher_label"] for r in train] == ["( 45 - 28 )", "( 9 * 4 )", "( 30 - 12 )", "5", "( 16 + 9 ) + 5"]
    assert [r["teacher_correct"] for r in train] == [True, True, False, False, True]
    assert train[0]["rationale"] == "Nina baked 45 muffins and sold 28. So 45 - 28 = 17 muffins are left."
    assert "Q:" not in train[1]["rationale"]
    assert train[0]["gold"] == "( 45.0 - 28.0 )" and train[0]["input"].endswith("\nHow many muffins are left?")
    assert train[2]["correct_rationale"] is None and train[0]["correct_rationale"] == train[0]["rationale"]
    assert train[0]["samples"][0]["text"].startswith("Nina baked")
    test = load_paper_rationales(FIXTURES / "svamp", "svamp", "test")  # the task folder itself works too
    assert [r["teacher_correct"] for r in test] == [True, False]


def test_load_paper_rationales_cqa_fixture():
    records = load_paper_rationales(FIXTURES, "cqa", "train")
    assert [r["id"] for r in records] == ["cqa-fx-1", "cqa-fx-2", "cqa-fx-3", "cqa-fx-4"]
    assert records[0]["input"].startswith("Where would you keep milk so that it stays cold?\nAnswer Choices:\n(a) ")
    assert [r["teacher_label"] for r in records] == ["refrigerator", "sleep", None, "desert"]  # (c) -> "sleep"
    assert [r["teacher_correct"] for r in records] == [True, True, False, False]
    assert records[2]["parse_failures"] == 1 and "So the answer is" in records[2]["samples"][0]["error"]
    assert "television" not in records[0]["rationale"]


@pytest.mark.parametrize("task", ["esnli", "anli1"])
def test_load_paper_rationales_nli_fixtures(task):
    train = load_paper_rationales(FIXTURES, task, "train")
    assert all(r["input"].startswith("Premise: ") and "\nHypothesis: " in r["input"] for r in train)
    assert all(r["gold"] in ("entailment", "neutral", "contradiction") for r in train)
    assert all("Premise:" not in r["rationale"] for r in train)
    labels = [r["teacher_label"] for r in train]
    assert labels[:3] == ["entailment", "contradiction", "neutral"]  # ANLI's "it is not possible to tell" too
    valid = load_paper_rationales(FIXTURES, task, "validation")
    assert len(valid) == 1 and valid[0]["teacher_correct"]
    test = load_paper_rationales(FIXTURES, task, "test")
    assert len(test) == 1


def test_paper_records_build_a_dataset_unchanged():
    records = load_paper_rationales(FIXTURES, "cqa", "train")
    test = read_paper_split(FIXTURES, "cqa", "test")
    dataset = build_rationale_dataset(records, "cqa", "correct", test, label_field=get_task("cqa").label_field)
    assert dataset["train"]["rationale"][2:] == ["", ""] and dataset["train"]["rationale"][0]
    assert dataset["test"]["label"] == ["shoes"]


@pytest.mark.parametrize("task", PAPER_TASK_NAMES)
def test_a_task_object_reads_and_builds_what_its_name_does(task):
    spec = get_task(task)
    assert read_paper_split(FIXTURES, spec, "test") == read_paper_split(FIXTURES, task, "test")
    assert load_task(spec, "test", data_dir=FIXTURES) == load_task(task, "test", data_dir=FIXTURES)
    records = load_paper_rationales(FIXTURES, spec, "train")
    assert records == load_paper_rationales(FIXTURES, task, "train")
    by_object = build_rationale_dataset(records, spec, "all", label_field=spec.label_field)["train"]
    assert by_object.to_list() == build_rationale_dataset(records, task, "all", label_field=spec.label_field)["train"].to_list()


def test_load_task_reads_the_released_layout_offline():
    rows = load_task("esnli", "valid", data_dir=FIXTURES)
    assert rows == [{"id": "esnli-valid-0", "input": rows[0]["input"], "label": "entailment"}]
    assert len(load_task("svamp", "train", data_dir=FIXTURES, limit=2)) == 2
    with pytest.raises(ValueError, match="Valid choices: train, test"):
        load_task("svamp", "valid", data_dir=FIXTURES)
    with pytest.raises(ValueError, match="Valid choices: train, test"):
        load_paper_rationales(FIXTURES, "cqa", "valid")


def _copy_task(tmp_path: Path, task: str) -> Path:
    shutil.copytree(FIXTURES / task, tmp_path / task)
    return tmp_path


def test_count_mismatch_names_both_counts_and_files(tmp_path):
    root = _copy_task(tmp_path, "svamp")
    batch = root / "svamp" / "llm" / "train_CoT_1.json"
    batch.write_text(json.dumps(json.loads(batch.read_text())[:1]))
    with pytest.raises(ValueError, match="5 inputs") as info:
        load_paper_rationales(root, "svamp", "train")
    message = str(info.value)
    assert "4 teacher outputs" in message and "svamp_train.json" in message
    assert "train_CoT_0.json" in message and "train_CoT_1.json" in message


def test_layout_errors_are_clear(tmp_path):
    root = _copy_task(tmp_path, "svamp")
    (root / "svamp" / "llm" / "train_CoT_1.json").rename(root / "svamp" / "llm" / "train_CoT_2.json")
    with pytest.raises(FileNotFoundError, match=r"not \[1\]"):
        load_paper_rationales(root, "svamp", "train")
    (root / "svamp" / "llm" / "test_CoT_0.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="JSON list"):
        load_paper_rationales(root, "svamp", "test")
    with pytest.raises(FileNotFoundError, match="download_paper_data"):
        load_paper_rationales(tmp_path, "anli1", "train")


# --- offline behaviour --------------------------------------------------------------------------------


def _force_offline(monkeypatch, tmp_path):
    """Offline mode for the Hugging Face libraries even though they were imported before the test."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.mark.parametrize("task", PAPER_TASK_NAMES)
def test_hub_offline_error_says_what_to_do(monkeypatch, tmp_path, task):
    _force_offline(monkeypatch, tmp_path)
    with pytest.raises(HubUnavailableError) as info:
        load_task(task, "train")
    message = str(info.value)
    assert get_task(task).hub_id in message
    assert "offline" in message and "load_paper_rationales" in message and "'arith'" in message
    assert isinstance(info.value, ConnectionError)


def test_unreachable_hub_fails_fast_without_downloading(monkeypatch):
    import utils.paper_data

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(utils.paper_data, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(HubUnavailableError, match="seems to be offline"):
        load_hub_split("anli1", "valid")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_download_paper_data_offline_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/datasets.zip"
    with pytest.raises(PaperDataUnavailable) as info:
        download_paper_data(tmp_path, url=url, timeout=5)
    message = str(info.value)
    assert url in message and "offline" in message and "load_paper_rationales" in message
    assert not list(tmp_path.iterdir())  # no partial download left behind


def test_download_paper_data_unzips_the_archive(tmp_path):
    archive = tmp_path / "datasets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (FIXTURES / "anli1").rglob("*.json"):
            zf.write(path, Path("datasets") / path.relative_to(FIXTURES))
    root = download_paper_data(tmp_path / "paper", url=archive.as_uri())
    assert root == tmp_path / "paper" / "datasets"
    assert len(load_paper_rationales(root, "anli1", "train")) == 3
    assert download_paper_data(tmp_path / "paper", url="http://127.0.0.1:1/never-called") == root
