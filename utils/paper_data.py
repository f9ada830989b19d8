"""The paper's data: its four tasks formatted as the authors did, from their released files or the hub.

Rows are `{"id", "input", "label"}`:

- `svamp`: body and question joined by a newline; the label is the equation. The hub copy
  (ChilleD/SVAMP, 700 + 300) is re-split into the paper's 800 train / 200 test.
- `cqa`: `question\\nAnswer Choices:\\n(a) ...\\n(e) ...`; the label is the answer TEXT (the
  released `cqa_*.json` files come from cos_e, whose `answer` field is the text, not the letter).
- `esnli`, `anli1`: `Premise: ...\\nHypothesis: ...`; labels entailment / neutral / contradiction.

The authors' archive (`download_paper_data`) also holds their PaLM 540B rationales, which
`load_paper_rationales` turns into teacher records of the same shape as the course's own teacher's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from utils.rationales import parse_cot_detailed
from utils.tasks import EQUATION, PAPER_TASK_NAMES, Task, read_jsonl, resolve_task

PAPER_DATA_URL = "https://github.com/google-research/distilling-step-by-step/raw/main/datasets.zip"
_LETTERS = "abcde"


class HubUnavailableError(ConnectionError):
    """A paper task's data could not be fetched from the Hugging Face Hub; the message says what to do."""


class PaperDataUnavailable(ConnectionError):
    """The paper's archive could not be downloaded; the message says what to do."""


# --- formatting ----------------------------------------------------------------------------------


def format_cqa(question: str, choices: list[str]) -> str:
    """A CommonsenseQA input as the paper writes it: the question, then `(a) ...` to `(e) ...`."""
    lines = [f"({letter}) {text}" for letter, text in zip(_LETTERS, choices, strict=False)]
    return f"{question}\nAnswer Choices:\n" + "\n".join(lines)


def format_nli(premise: str, hypothesis: str) -> str:
    """An NLI input: `Premise: ...` and `Hypothesis: ...` on two lines."""
    return f"Premise: {premise}\nHypothesis: {hypothesis}"


def cqa_choice_text(label: str, input_text: str) -> str | None:
    """The answer text that a bare letter such as `(b)` or `b` picks among the choices of `input_text`."""
    match = re.fullmatch(r"\(?([a-eA-E])\)?\.?", label.strip())
    if not match:
        return None
    letter = match.group(1).lower()
    found = re.search(rf"^\({letter}\) (.+)$", input_text, re.MULTILINE)
    return found.group(1).strip() if found else None


def _class_label(value: object, task: Task) -> str:
    """A class of a closed label set (`entailment`, ...) from its class id (0, 1, 2) or its name."""
    classes = task.classes
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(classes):
        return classes[value]
    if isinstance(value, str) and value.strip().lower() in classes:
        return value.strip().lower()
    ids = ", ".join(str(i) for i in range(len(classes)))
    raise ValueError(f"{task.name}: label {value!r} is not one of {ids} or {', '.join(classes)}")


def _require(row: dict, fields: tuple[str, ...], task: str, where: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise ValueError(f"{where}: a {task} row lacks the field(s) {missing}; it has {sorted(row)}.")


def _word_problem(row: dict, task: Task, where: str) -> dict:
    """A SVAMP-shaped row (formatted, or the hub's `Body`/`Question`/`Equation`) as `input`, `label`."""
    if "input" in row:
        _require(row, ("input", "label"), task.name, where)
        example = {"input": row["input"], "label": str(row["label"])}
    else:
        _require(row, ("Body", "Question", "Equation"), task.name, where)
        example = {"input": f"{row['Body']}\n{row['Question']}", "label": row["Equation"]}
    if row.get("Answer") is not None:
        example["answer"] = float(row["Answer"])
    return example


def _multiple_choice(row: dict, task: Task, where: str) -> dict:
    """A CommonsenseQA-shaped row (formatted, cos_e, or the hub's) as `input`, `label` (the answer text)."""
    if "input" in row:
        _require(row, ("input", "label"), task.name, where)
        return {"input": row["input"], "label": str(row["label"])}
    _require(row, ("question", "choices"), task.name, where)
    choices = row["choices"]
    texts = choices["text"] if isinstance(choices, dict) else list(choices)
    if "answer" in row:
        label = row["answer"]
    else:
        _require(row, ("answerKey",), task.name, where)
        keys = [k.lower() for k in choices["label"]] if isinstance(choices, dict) else list(task.choice_letters)
        key = str(row["answerKey"]).lower()
        if key not in keys:
            raise ValueError(f"{where}: answerKey {row['answerKey']!r} is not among the choices {keys}.")
        label = texts[keys.index(key)]
    return {"input": format_cqa(row["question"], texts), "label": str(label)}


def _premise_hypothesis(row: dict, task: Task, where: str) -> dict:
    """An NLI-shaped row (formatted, or `premise`/`hypothesis`/`label`) as `input`, `label` (a class name)."""
    if "input" in row:
        _require(row, ("input", "label"), task.name, where)
        return {"input": row["input"], "label": _class_label(row["label"], task)}
    _require(row, ("premise", "hypothesis", "label"), task.name, where)
    return {"input": format_nli(row["premise"], row["hypothesis"]), "label": _class_label(row["label"], task)}


def paper_example(task: Task | str, row: dict, index: int, split: str, where: str = "row") -> dict:
    """One row of a paper task, from any of its shapes, as `{"id", "input", "label"}`.

    Accepted shapes: already formatted (`input`, `label`); the authors' released files (cos_e
    `question`/`choices`/`answer` for cqa, `premise`/`hypothesis`/`label` with class ids for
    the NLI tasks); the hub rows (`Body`/`Question`/`Equation` for SVAMP, `choices` as
    `{"label", "text"}` and `answerKey` for CommonsenseQA). A missing field is an error naming it.
    """
    spec = resolve_task(task)
    if not spec.paper:
        raise ValueError(f"{spec.name!r} is not a paper task. Paper tasks: {', '.join(PAPER_TASK_NAMES)}.")
    row_id = next((str(row[k]) for k in ("id", "uid", "ID") if row.get(k) not in (None, "")), None)
    if spec.kind == EQUATION:
        fields = _word_problem(row, spec, where)
    elif spec.choice_letters:
        fields = _multiple_choice(row, spec, where)
    else:
        fields = _premise_hypothesis(row, spec, where)
    return {"id": row_id or f"{spec.name}-{split}-{index}", **fields}


# --- the authors' released files -----------------------------------------------------------------


def paper_split_path(root: str | Path, task: str, split: str) -> Path:
    """Where the authors' layout keeps the inputs of a split: `<root>/<task>/<task>_<split>.json`.

    `root` may also be the task folder itself.
    """
    root = Path(root)
    folder = root if (root / f"{task}_{split}.json").is_file() or root.name == task else root / task
    return folder / f"{task}_{split}.json"


def read_paper_split(root: str | Path, task: Task | str, split: str) -> list[dict]:
    """The inputs and gold labels of one split in the authors' released layout, formatted (`paper_example`).

    The files hold one JSON object per line (what `Dataset.to_json` writes).
    """
    spec = resolve_task(task)
    split = spec.canonical_split(split)
    path = paper_split_path(root, spec.name, split)
    if not path.is_file():
        present = sorted(p.name for p in path.parent.glob(f"{spec.name}_*.json")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"{path} does not exist (files there: {present or 'none'}). The authors' layout is "
            f"<root>/{spec.name}/{spec.name}_<split>.json; get it with utils.paper_data.download_paper_data(dest) on a "
            "machine with internet."
        )
    rows = read_jsonl(path)
    return [paper_example(spec, row, i, split, where=f"{path}:{i + 1}") for i, row in enumerate(rows)]


def _batch_files(folder: Path, split: str) -> list[Path]:
    """``<split>_CoT_<i>.json`` in ``folder``, ordered by ``i``; a gap in the numbering is an error."""
    found = {}
    for path in folder.glob(f"{split}_CoT_*.json"):
        match = re.fullmatch(rf"{re.escape(split)}_CoT_(\d+)\.json", path.name)
        if match:
            found[int(match.group(1))] = path
    missing = sorted(set(range(max(found) + 1)) - set(found)) if found else []
    if missing:
        raise FileNotFoundError(
            f"{folder} has {split}_CoT batches {sorted(found)} but not {missing}; the batches concatenate "
            "in order, so none may be missing."
        )
    return [found[i] for i in sorted(found)]


def _paper_record(example: dict, text: object, task: Task) -> dict:
    """One paper output as a teacher record (the shape ``utils.teacher.generate_rationales`` returns)."""
    parsed = parse_cot_detailed(text, task)
    label, error = parsed.label, parsed.error
    if task.choice_letters and label is not None and re.fullmatch(rf"\([{task.choice_letters}]\)", label):
        label = cqa_choice_text(label, example["input"])
        if label is None:
            error = f"choice {parsed.label} is not among the answer choices"
    if label is not None and task.label_key(label) is None:
        label, error = None, f"label {label!r} is not a valid answer"
    if label is not None and task.classes:
        label = task.label_key(label)  # "it is not possible to tell" -> "neutral", as the gold labels read
    correct = task.correct(label, example["label"])
    return {
        "id": example["id"],
        "input": example["input"],
        "gold": example["label"],
        "samples": [{"text": text, "rationale": parsed.rationale, "label": label, "error": error}],
        "teacher_label": label,
        "votes": int(label is not None),
        "rationale": parsed.rationale,
        "parse_failures": int(label is None),
        "teacher_correct": correct,
        "correct_rationale": parsed.rationale if correct else None,
        "greedy_correct": correct,
    }


def load_paper_rationales(root: str | Path, task: Task | str, split: str) -> list[dict]:
    """The authors' PaLM rationales for one split, as teacher records ``build_rationale_dataset`` takes.

    Layout (the unzipped ``datasets.zip`` of google-research/distilling-step-by-step):
    ``<root>/<task>/<task>_<split>.json`` holds one JSON object per line (inputs and gold labels;
    see ``read_paper_split`` for the shapes), and ``<root>/<task>/llm/<split>_CoT_<i>.json``
    JSON lists of raw PaLM outputs in input order, in batches 0, 1, 2... that concatenate in order.
    Splits: ``train``, ``test`` and, for esnli and anli1, ``valid`` (SVAMP and CQA have none).
    Each output is parsed with the task's parser; records say why when no label could be read.
    """
    spec = resolve_task(task)
    examples = read_paper_split(root, spec, split)
    split = spec.canonical_split(split)
    inputs_path = paper_split_path(root, spec.name, split)
    llm_dir = inputs_path.parent / "llm"
    files = _batch_files(llm_dir, split) if llm_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"No teacher outputs {llm_dir}/{split}_CoT_<i>.json for the {split} split of {spec.name}.")
    outputs: list = []
    for path in files:
        batch = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(batch, list):
            raise ValueError(f"{path} should hold a JSON list of output strings, not a {type(batch).__name__}.")
        outputs.extend(batch)
    if len(outputs) != len(examples):
        names = ", ".join(p.name for p in files)
        raise ValueError(
            f"{spec.name} {split}: {len(examples)} inputs in {inputs_path} but {len(outputs)} teacher outputs in "
            f"{llm_dir} ({names}). Outputs pair with inputs by position, so the counts must be equal."
        )
    return [_paper_record(example, text, spec) for example, text in zip(examples, outputs, strict=True)]


def download_paper_data(
    dest: str | Path | None = None, url: str = PAPER_DATA_URL, timeout: float = 60.0, force: bool = False
) -> Path:
    """Download and unzip the authors' ``datasets.zip``; return the folder that holds ``<task>/`` folders.

    ``dest`` defaults to the git-ignored ``runs/paper_data``. An existing unzipped copy is reused
    unless ``force``. Offline, raises ``PaperDataUnavailable`` saying what to do instead.
    """
    from tqdm.auto import tqdm

    dest = Path(dest) if dest is not None else Path(__file__).resolve().parent.parent / "runs" / "paper_data"
    root = dest / "datasets"
    if root.is_dir() and any(root.iterdir()) and not force:
        return root
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / "datasets.zip.part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="datasets.zip") as bar:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        raise PaperDataUnavailable(
            f"Could not download the paper's data from {url} ({getattr(err, 'reason', err)}): this machine seems "
            "to be offline. What to do: on a machine with internet download that file, unzip it (it holds "
            "datasets/<task>/...), copy the datasets/ folder here and call "
            "utils.paper_data.load_paper_rationales('<that folder>', task, split); or use the bundled 'arith' task."
        ) from err
    try:
        with zipfile.ZipFile(part) as archive:  # extractall refuses absolute and '..' member paths
            archive.extractall(dest)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{url} did not give a zip archive (saved as {part}); download it again.") from err
    part.unlink()
    if not root.is_dir():
        raise FileNotFoundError(f"The archive from {url} has no datasets/ folder; look inside {dest}.")
    return root


def paper_svamp_split(items: list[dict]) -> dict[str, list[dict]]:
    """The paper's SVAMP split: the 1000 items in `ID` order (chal-1 ... chal-1000), permuted with
    numpy's `RandomState(0)`, 800 train then 200 test (as the authors' `SVAMPDatasetLoader`).

    Checked against the released svamp_{train,test}.json: the same inputs in the same order.
    """
    import numpy as np

    ordered = sorted(items, key=lambda item: int(str(item["ID"]).rsplit("-", 1)[-1]))
    if len(ordered) != 1000:
        raise ValueError(f"SVAMP has 1000 items; got {len(ordered)}, so the paper's split cannot be rebuilt.")
    order = np.random.RandomState(seed=0).permutation(len(ordered))
    return {"train": [ordered[i] for i in order[:800]], "test": [ordered[i] for i in order[800:]]}


# --- the Hugging Face Hub ------------------------------------------------------------------------


def _hub_offline_flag() -> bool:
    """True if the user asked the Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub host, so that an offline machine fails in seconds, not minutes."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct check proves nothing; let the download decide
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_error(task: str, split: str, hub_id: str, hub_split: str, cause: BaseException | None) -> HubUnavailableError:
    offline = cause is None or isinstance(cause, (ConnectionError, OSError, TimeoutError)) or _hub_offline_flag()
    why = (
        "this machine seems to be offline (or huggingface.co is unreachable)"
        if offline
        else "the hub did not serve it (the id may have moved, or the hub is down)"
    )
    detail = f" Cause: {type(cause).__name__}: {str(cause)[:300]}" if cause is not None else ""
    return HubUnavailableError(
        f"Could not load task {task!r} split {split!r} from the Hugging Face Hub (dataset id {hub_id!r}, "
        f"split {hub_split!r}): {why}. What to do: (1) use a local copy of the paper's released data: on a "
        f"machine with internet run utils.paper_data.download_paper_data(dest) (it fetches {PAPER_DATA_URL}), "
        f"copy the unzipped datasets/ folder here, then call utils.paper_data.load_paper_rationales(root, "
        f"{task!r}, {split!r}) or utils.tasks.load_task({task!r}, {split!r}, data_dir=root); (2) if this dataset "
        "was downloaded before, set HF_DATASETS_OFFLINE=1 to use the cached copy; (3) use the bundled offline "
        f"task 'arith'.{detail}"
    )


def load_hub_split(task: Task | str, split: str) -> list[dict]:
    """One split of a paper task from the Hugging Face Hub, formatted like the paper (`paper_example`).

    Hub ids: SVAMP `ChilleD/SVAMP` (MIT; both splits, re-split the paper's way), CommonsenseQA
    `tau/commonsense_qa` (MIT; test = validation, as in the paper), e-SNLI `esnli/esnli` (MIT),
    ANLI `facebook/anli` (CC BY-NC 4.0; splits train_r1 / dev_r1 / test_r1). Rows without a gold
    label (class id -1) are skipped. Any failure raises one `HubUnavailableError`.
    """
    spec = resolve_task(task)
    split = spec.canonical_split(split)
    if spec.hub_id is None:
        raise ValueError(f"Task {spec.name!r} has no hub copy; load it with load_task({spec.name!r}, {split!r}).")
    hub_split = dict(spec.hub_splits)[split]
    if not _hub_offline_flag() and not _hub_reachable():
        raise _hub_error(spec.name, split, spec.hub_id, hub_split, None)
    try:
        from datasets import load_dataset

        # A split such as "train+test" is the concatenation of those hub splits.
        items = [dict(row) for row in load_dataset(spec.hub_id, split=hub_split)]
    except Exception as err:  # whatever the hub or the cache says, the user gets one clear message
        raise _hub_error(spec.name, split, spec.hub_id, hub_split, err) from err
    if spec.hub_resplit:
        items = paper_svamp_split(items)[split]
    if spec.classes:
        items = [row for row in items if row.get("label") in range(len(spec.classes))]
    return [paper_example(spec, row, i, split, where=f"{spec.hub_id}[{hub_split}][{i}]") for i, row in enumerate(items)]
