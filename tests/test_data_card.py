"""The dataset card ``save_dataset`` writes: a ``huggingface_hub.DatasetCard`` that loads back with its
licenses, size and source in the metadata, and the card text the course has always written."""

import json

import pytest
from datasets import Dataset, DatasetDict

from utils.data import dataset_card, save_dataset


def _dataset(train_rows: int = 4) -> DatasetDict:
    def rows(n, prefix):
        return [{"id": f"{prefix}{i}", "input": f"problem {i}", "label": "1+1", "teacher_label": "1+1",
                 "rationale": "One and one make two." if i % 2 == 0 else "", "teacher_correct": i % 2 == 0}
                for i in range(n)]

    return DatasetDict({"train": Dataset.from_list(rows(train_rows, "t")), "test": Dataset.from_list(rows(2, "s"))})


def test_the_dataset_card_loads_back_with_its_metadata(tmp_path):
    from huggingface_hub import DatasetCard

    out = save_dataset(_dataset(), tmp_path, {"task": "arith", "policy": "correct"})
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.language == ["en"]
    assert card.data.size_categories == ["n<1K"] and "distilling-step-by-step" in card.data.tags
    assert "| train | 4 | 2 | 2 |" in card.text and "Teacher accuracy on train: 2/4 = 50.0%" in card.text
    assert "generated here" in card.text and "## Source and license" in card.text
    assert json.loads((out / "card.json").read_text())["splits"] == {"train": 4, "test": 2}
    assert not list(out.glob(".*.tmp-*")), "a temporary file was left behind"


@pytest.mark.parametrize(
    ("task", "licenses", "source"),
    [("svamp", ["mit", "apache-2.0"], "ChilleD/SVAMP"), ("anli1", ["cc-by-nc-4.0", "apache-2.0"], "facebook/anli")],
)
def test_the_card_metadata_names_the_inputs_and_rationales_licenses(task, licenses, source):
    from huggingface_hub import DatasetCard

    card = DatasetCard(dataset_card(_dataset(), {"task": task, "rationale_source": "paper"}))
    assert card.data.license == licenses and card.data.source_datasets == [source]
    assert "PaLM" in card.text


def test_an_unknown_task_still_gets_a_card():
    from huggingface_hub import DatasetCard

    card = DatasetCard(dataset_card(_dataset(), {"task": "not-a-task"}))
    assert card.data.license == ["other", "apache-2.0"] and "unknown task" in card.text
