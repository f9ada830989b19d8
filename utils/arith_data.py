"""The bundled `arith` task: synthetic arithmetic word problems in the style of SVAMP (Patel et al. 2021).

Each item has a word problem (`input`), an equation label in SVAMP spacing (`( ( 24 - 9 ) * 3 )`)
and its value (`answer`). Problems are drawn from story templates with random names, objects and
numbers, deterministically from a seed; `write_arith_data` wrote the committed `data/arith/` files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from utils.safe_math import UnsafeExpression, safe_eval, step_values

ONE_OP_SHARE = 0.6  # SVAMP is mostly one-operation; two-op problems make the rest

# Word lists for the generator; tuples so that nothing can change them at run time.
# Names by the pronoun the stories use for them.
_NAMES_SHE = (
    "Maya", "Aisha", "Sofia", "Priya", "Emma", "Hana", "Zara", "Amara",
    "Lily", "Nora", "Elena", "Fatima", "Yuki", "Ada", "Mia",
)  # fmt: skip
_NAMES_HE = (
    "Leo", "Ben", "Chen", "Omar", "Lucas", "Diego", "Noah", "Ivan",
    "Kenji", "Mateo", "Ravi", "Kofi", "Tom", "Jonas", "Sam",
)  # fmt: skip
# (plural object, containers it plausibly comes in)
_OBJECTS = (
    ("apples", ("basket", "bag", "crate", "box")),
    ("marbles", ("jar", "bag", "box")),
    ("stickers", ("pack", "sheet", "box")),
    ("cookies", ("box", "jar", "tray", "bag")),
    ("books", ("box", "crate")),
    ("pencils", ("box", "pack", "cup")),
    ("cards", ("pack", "box")),
    ("shells", ("bucket", "jar", "bag")),
    ("balloons", ("bag", "pack")),
    ("stamps", ("sheet", "book")),
    ("crayons", ("box", "pack")),
    ("oranges", ("basket", "bag", "crate")),
    ("beads", ("jar", "bag", "box")),
    ("candies", ("bag", "jar", "box")),
    ("eggs", ("carton", "basket", "tray")),
    ("flowers", ("vase", "bucket", "pot")),
    ("toy cars", ("box", "bag")),
    ("buttons", ("jar", "tin", "box")),
)
# (singular, plural); the templates say "a {thing}", so none may start with a vowel sound.
_THINGS = (
    ("book", "books"),
    ("ticket", "tickets"),
    ("notebook", "notebooks"),
    ("toy car", "toy cars"),
    ("sandwich", "sandwiches"),
    ("T-shirt", "T-shirts"),
    ("plant", "plants"),
    ("puzzle", "puzzles"),
)
_GROUPS = ("friend", "classmate", "cousin", "teammate", "neighbor", "student")
# (third person, base form) of an activity measured in minutes
_ACTIVITIES = (
    ("practices the piano", "practice the piano"),
    ("plays chess", "play chess"),
    ("walks the dog", "walk the dog"),
    ("does yoga", "do yoga"),
    ("studies Spanish", "study Spanish"),
    ("draws", "draw"),
    ("reads comics", "read comics"),
)
# (third person, base form, past tense) of a way to travel a distance in km
_TRAVEL = (
    ("cycles", "cycle", "cycled"),
    ("runs", "run", "ran"),
    ("walks", "walk", "walked"),
    ("hikes", "hike", "hiked"),
    ("jogs", "jog", "jogged"),
    ("rides", "ride", "rode"),
)


@dataclass(frozen=True)
class _Template:
    """One story shape: an equation pattern, number ranges and the words around them.

    `facts` and `question` make the usual problem; `if_form`, when given, is a single
    question-first sentence ("How many ... if ...?") holding the same facts.
    """

    equation: str
    ranges: tuple[tuple[int, int], ...]
    facts: str
    question: str
    if_form: str | None = None


_ONE_OP_TEMPLATES = (
    # addition
    _Template(
        "( {a} + {b} )",
        ((2, 60), (2, 60)),
        "{n1} has {a} {obj}. {n2} gives {o1} {b} more {obj}.",
        "How many {obj} does {n1} have now?",
        "How many {obj} does {n1} have now if {s1} had {a} and {n2} gave {o1} {b} more?",
    ),
    _Template(
        "( {a} + {b} )",
        ((2, 60), (2, 60)),
        "{n1} bought {a} {obj} on Monday and {b} {obj} on Tuesday.",
        "How many {obj} did {n1} buy in all?",
        "How many {obj} did {n1} buy in all if {s1} bought {a} on Monday and {b} on Tuesday?",
    ),
    _Template(
        "( {a} + {b} )",
        ((2, 60), (2, 60)),
        "There are {a} {obj} in the {cont}. {n1} puts {b} more {obj} in the {cont}.",
        "How many {obj} are in the {cont} now?",
    ),
    _Template(
        "( {a} + {b} )",
        ((2, 60), (2, 60)),
        "{n1} had {a} dollars. {S1} earned {b} dollars helping {n2} in the garden.",
        "How many dollars does {n1} have now?",
        "How many dollars does {n1} have now if {s1} had {a} dollars and earned {b} more?",
    ),
    _Template(
        "( {a} + {b} )",
        ((2, 60), (2, 60)),
        "{n1} {tv_past} {a} km on Saturday and {b} km on Sunday.",
        "How many km did {n1} {tv} over the weekend?",
        "How many km did {n1} {tv} over the weekend if {s1} {tv_past} {a} km on Saturday and {b} km on Sunday?",
    ),
    _Template(
        "( {a} + {b} )",
        ((2, 60), (2, 60)),
        "{n1} spent {a} minutes on math homework and {b} minutes on science homework.",
        "How many minutes did {n1} spend on homework?",
    ),
    _Template(
        "( {a} + {b} )",
        ((2, 60), (2, 60)),
        "{n1} has {a} {obj}. {n2} has {b} more {obj} than {n1}.",
        "How many {obj} does {n2} have?",
    ),
    _Template(
        "( {a} + {b} )",
        ((2, 60), (2, 60)),
        "{n1} read {a} pages yesterday and {b} pages today.",
        "How many pages has {n1} read in the two days?",
        "How many pages has {n1} read in the two days if {s1} read {a} pages yesterday and {b} today?",
    ),
    # subtraction
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "{n1} had {a} {obj}. {S1} gave {b} {obj} to {n2}.",
        "How many {obj} does {n1} have left?",
        "How many {obj} does {n1} have left if {s1} had {a} and gave {b} to {n2}?",
    ),
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "{n1} has {a} {obj} and {n2} has {b} {obj}.",
        "How many more {obj} does {n1} have than {n2}?",
    ),
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "There were {a} {obj} in the {cont}. {n1} took {b} of them out.",
        "How many {obj} are still in the {cont}?",
        "How many {obj} are still in the {cont} if there were {a} and {n1} took {b} out?",
    ),
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "{n1} had {a} dollars. {S1} spent {b} dollars on a {thing}.",
        "How many dollars does {n1} have left?",
        "How many dollars does {n1} have left if {s1} had {a} dollars and spent {b} on a {thing}?",
    ),
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "A trail is {a} km long. {n1} has already walked {b} km of it.",
        "How many km does {n1} still have to walk?",
    ),
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "A movie lasts {a} minutes. {n1} has watched the first {b} minutes.",
        "How many minutes of the movie are left?",
        "How many minutes of the movie are left if it lasts {a} minutes and {n1} has watched {b}?",
    ),
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "A book has {a} pages. {n1} has read {b} pages so far.",
        "How many pages does {n1} still have to read?",
    ),
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "{n1} has {a} {obj}. {n2} has {b} fewer {obj} than {n1}.",
        "How many {obj} does {n2} have?",
    ),
    _Template(
        "( {a} - {b} )",
        ((5, 60), (2, 59)),
        "{n1} wants to collect {a} {obj}. {S1} already has {b}.",
        "How many more {obj} does {n1} need?",
        "How many more {obj} does {n1} need if {s1} wants {a} and already has {b}?",
    ),
    # multiplication
    _Template(
        "( {a} * {b} )",
        ((2, 12), (2, 12)),
        "Each {cont} holds {b} {obj}. {n1} has {a} full {conts}.",
        "How many {obj} does {n1} have?",
        "How many {obj} are in {a} {conts} if each {cont} holds {b}?",
    ),
    _Template(
        "( {a} * {b} )",
        ((2, 12), (2, 12)),
        "A {thing} costs {b} dollars. {n1} buys {a} {things}.",
        "How many dollars does {n1} spend?",
        "How many dollars does {n1} spend on {a} {things} if each costs {b} dollars?",
    ),
    _Template(
        "( {a} * {b} )",
        ((2, 12), (2, 12)),
        "{n1} {tv_s} {b} km every day.",
        "How many km does {n1} {tv} in {a} days?",
    ),
    _Template(
        "( {a} * {b} )",
        ((2, 12), (2, 12)),
        "{n1} {act_s} for {b} minutes each day.",
        "How many minutes does {n1} {act} in {a} days?",
    ),
    _Template(
        "( {a} * {b} )",
        ((2, 12), (2, 12)),
        "{n1} reads {b} pages every night.",
        "How many pages does {n1} read in {a} nights?",
    ),
    _Template(
        "( {a} * {b} )",
        ((2, 6), (2, 12)),
        "{n2} has {b} {obj}. {n1} has {a} times as many {obj} as {n2}.",
        "How many {obj} does {n1} have?",
    ),
    _Template(
        "( {a} * {b} )",
        ((2, 12), (2, 12)),
        "{n1} arranges {obj} in {a} rows with {b} {obj} in each row.",
        "How many {obj} are there in the rows?",
        "How many {obj} does {n1} need to make {a} rows of {b}?",
    ),
    # division
    _Template(
        "( {a} / {b} )",
        ((4, 60), (2, 10)),
        "{n1} has {a} {obj} and shares them equally among {b} {groups}.",
        "How many {obj} does each {group} get?",
        "How many {obj} does each {group} get if {n1} shares {a} {obj} equally among {b} {groups}?",
    ),
    _Template(
        "( {a} / {b} )",
        ((4, 60), (2, 10)),
        "{n1} has {a} {obj}. Each {cont} holds {b} {obj}.",
        "How many {conts} can {n1} fill?",
        "How many {conts} can {n1} fill with {a} {obj} if each {cont} holds {b}?",
    ),
    _Template(
        "( {a} / {b} )",
        ((4, 60), (2, 10)),
        "{n1} paid {a} dollars for {b} {things} that all cost the same.",
        "How many dollars did each {thing} cost?",
    ),
    _Template(
        "( {a} / {b} )",
        ((4, 60), (2, 10)),
        "{n1} {tv_past} {a} km in {b} days, the same distance each day.",
        "How many km did {n1} {tv} each day?",
    ),
    _Template(
        "( {a} / {b} )",
        ((4, 60), (2, 10)),
        "{n1} spent {a} minutes on {b} puzzles and took the same time for each.",
        "How many minutes did each puzzle take?",
    ),
    _Template(
        "( {a} / {b} )",
        ((4, 60), (2, 10)),
        "{n1} wants to finish a {a}-page book in {b} days, reading the same number of pages each day.",
        "How many pages should {n1} read each day?",
        "How many pages a day should {n1} read to finish a {a}-page book in {b} days?",
    ),
    _Template(
        "( {a} / {b} )",
        ((4, 60), (2, 10)),
        "A coach splits {a} players into teams of {b}.",
        "How many teams are there?",
        "How many teams of {b} can a coach make from {a} players?",
    ),
)

_TWO_OP_TEMPLATES = (
    _Template(
        "( ( {a} + {b} ) - {c} )",
        ((2, 40), (2, 30), (2, 60)),
        "{n1} had {a} {obj}. {S1} bought {b} more and then gave {c} to {n2}.",
        "How many {obj} does {n1} have now?",
        "How many {obj} does {n1} have now if {s1} started with {a}, bought {b} more and gave {c} to {n2}?",
    ),
    _Template(
        "( ( {a} - {b} ) + {c} )",
        ((5, 50), (2, 40), (2, 30)),
        "{n1} had {a} {obj}. {S1} lost {b} of them, but then {n2} gave {o1} {c}.",
        "How many {obj} does {n1} have now?",
    ),
    _Template(
        "( {a} - ( {b} + {c} ) )",
        ((10, 60), (2, 25), (2, 25)),
        "{n1} had {a} {obj}. {S1} gave {b} to {n2} and {c} to {n3}.",
        "How many {obj} does {n1} have left?",
        "How many {obj} does {n1} have left if {s1} had {a} and gave {b} to {n2} and {c} to {n3}?",
    ),
    _Template(
        "( ( {a} * {b} ) + {c} )",
        ((2, 9), (2, 12), (2, 20)),
        "{n1} has {a} {conts} with {b} {obj} in each, and {c} more {obj} on the table.",
        "How many {obj} does {n1} have altogether?",
    ),
    _Template(
        "( ( {a} * {b} ) - {c} )",
        ((2, 9), (2, 12), (2, 30)),
        "{n1} bought {a} {conts} of {obj} with {b} {obj} in each. {S1} gave away {c} {obj}.",
        "How many {obj} does {n1} have left?",
        "How many {obj} does {n1} have left if {s1} bought {a} {conts} of {b} and gave away {c}?",
    ),
    _Template(
        "( ( {a} + {b} ) * {c} )",
        ((2, 12), (2, 12), (2, 8)),
        "Each {cont} holds {a} small {obj} and {b} large {obj}. There are {c} {conts}.",
        "How many {obj} are there in all?",
    ),
    _Template(
        "( ( {a} + {b} ) / {c} )",
        ((2, 40), (2, 40), (2, 9)),
        "{n1} has {a} {obj} and {n2} has {b} {obj}. They put them together and share them equally among {c} {groups}.",
        "How many {obj} does each {group} get?",
    ),
    _Template(
        "( ( {a} - {b} ) / {c} )",
        ((10, 60), (2, 30), (2, 9)),
        "{n1} had {a} {obj}. {S1} kept {b} and shared the rest equally among {c} {groups}.",
        "How many {obj} did each {group} get?",
        "How many {obj} did each {group} get if {n1} had {a}, kept {b} and shared the rest equally among {c} {groups}?",
    ),
    _Template(
        "( ( {a} - {b} ) * {c} )",
        ((5, 30), (2, 15), (2, 8)),
        "A {thing} usually costs {a} dollars. Today it is {b} dollars cheaper.",
        "How many dollars does {n1} pay for {c} {things} today?",
    ),
    _Template(
        "( ( {a} * {b} ) + {c} )",
        ((2, 9), (2, 15), (2, 20)),
        "{n1} bought {a} {things} at {b} dollars each and paid {c} dollars for delivery.",
        "How many dollars did {n1} spend in total?",
    ),
    _Template(
        "( ( {a} / {b} ) + {c} )",
        ((4, 60), (2, 10), (2, 20)),
        "{n1} shared {a} {obj} equally among {b} {groups}. Each {group} already had {c} {obj}.",
        "How many {obj} does each {group} have now?",
    ),
    _Template(
        "( ( {a} / {b} ) - {c} )",
        ((10, 60), (2, 6), (2, 15)),
        "{n1} read a {a}-page book in {b} days, the same number of pages each day. {n2} reads"
        " {c} fewer pages a day than {n1}.",
        "How many pages does {n2} read a day?",
    ),
    _Template(
        "( ( {a} * {b} ) + {c} )",
        ((2, 10), (2, 7), (2, 25)),
        "{n1} {tv_past} {a} km a day for {b} days, and then {c} km more on Sunday.",
        "How many km did {n1} {tv} altogether?",
    ),
    _Template(
        "( ( {a} + {b} ) * {c} )",
        ((5, 30), (5, 30), (2, 6)),
        "Every day {n1} spends {a} minutes walking to school and {b} minutes walking back.",
        "How many minutes does {n1} spend walking in {c} days?",
    ),
    _Template(
        "( ( {a} * {b} ) / {c} )",
        ((2, 10), (2, 12), (2, 9)),
        "There are {a} {conts} with {b} {obj} in each. The {obj} are shared equally among {c} {groups}.",
        "How many {obj} does each {group} get?",
    ),
    _Template(
        "( {a} - ( {b} + {c} ) )",
        ((10, 60), (2, 25), (2, 25)),
        "A trail is {a} km long. {n1} walked {b} km before lunch and {c} km after lunch.",
        "How many km of the trail are left?",
        "How many km of the trail are left if it is {a} km long and {n1} walked {b} km before lunch and {c} km after?",
    ),
    _Template(
        "( ( {a} + {b} ) - {c} )",
        ((2, 40), (2, 20), (2, 30)),
        "{n1} has {a} {obj}. {n2} has {b} more than {n1}, and {n3} has {c} fewer than {n2}.",
        "How many {obj} does {n3} have?",
    ),
    _Template(
        "( ( {a} * {b} ) - {c} )",
        ((2, 10), (5, 15), (2, 30)),
        "{n1} planned to {act} for {b} minutes a day for {a} days, but {s1} skipped {c} minutes in total.",
        "How many minutes did {n1} {act}?",
    ),
)


def _plural(noun: str) -> str:
    """Plural of a container noun (the few used here are regular)."""
    return noun + "es" if noun.endswith(("x", "ch", "sh")) else noun + "s"


def _all_steps_positive_integers(equation: str) -> bool:
    """True if every intermediate and the final value of `equation` is an integer >= 1.

    Checking every step (not only the result) keeps stories sensible: nobody gives away more
    than they have, and every share is a whole number.
    """
    try:
        values = step_values(equation)
    except UnsafeExpression:  # e.g. a division by a zero difference
        return False
    return all(value >= 1 and value == int(value) for value in values)


def _sample_equation(template: _Template, rng: random.Random) -> str:
    """Draw numbers for `template` until every step is a positive integer; return the equation."""
    for _ in range(10_000):
        numbers = [rng.randint(low, high) for low, high in template.ranges]
        equation = template.equation.format(**dict(zip("abc", numbers, strict=False)))
        if _all_steps_positive_integers(equation):
            return equation
    raise RuntimeError(f"No valid numbers found for template {template.equation!r}")


def _pick_words(equation: str, rng: random.Random) -> dict[str, str]:
    """Random names, objects and verbs for one problem, plus the numbers of `equation`."""
    n1, n2, n3 = rng.sample(_NAMES_SHE + _NAMES_HE, 3)
    s1, o1 = ("she", "her") if n1 in _NAMES_SHE else ("he", "him")
    obj, containers = rng.choice(_OBJECTS)
    cont = rng.choice(containers)
    thing, things = rng.choice(_THINGS)
    group = rng.choice(_GROUPS)
    act_s, act = rng.choice(_ACTIVITIES)
    tv_s, tv, tv_past = rng.choice(_TRAVEL)
    numbers = [token for token in equation.split() if token.isdigit()]
    return {
        "n1": n1,
        "n2": n2,
        "n3": n3,
        "s1": s1,
        "S1": s1.capitalize(),
        "o1": o1,
        "obj": obj,
        "cont": cont,
        "conts": _plural(cont),
        "thing": thing,
        "things": things,
        "group": group,
        "groups": group + "s",
        "act_s": act_s,
        "act": act,
        "tv_s": tv_s,
        "tv": tv,
        "tv_past": tv_past,
        **dict(zip("abc", numbers, strict=False)),
    }


def _render(template: _Template, equation: str, rng: random.Random) -> str:
    """Write the problem text of `template` with the numbers of `equation`.

    The question comes last most of the time and first otherwise (as its own sentence or as
    one "How many ... if ...?" sentence), because real word problems vary the order.
    """
    words = _pick_words(equation, rng)
    facts = template.facts.format(**words)
    question = template.question.format(**words)
    order = rng.random()
    if order < 0.65:
        return f"{facts} {question}"
    if order < 0.85 and template.if_form is not None:
        return template.if_form.format(**words)
    return f"{question} {facts}"


def _make_problem(rng: random.Random) -> tuple[str, str]:
    """Draw one problem; return (input text, equation)."""
    if rng.random() < ONE_OP_SHARE:
        op = rng.choice("+-*/")
        choices = [t for t in _ONE_OP_TEMPLATES if f" {op} " in t.equation]
    else:
        choices = list(_TWO_OP_TEMPLATES)
    template = rng.choice(choices)
    equation = _sample_equation(template, rng)
    return _render(template, equation, rng), equation


def generate_arith(n: int, seed: int, *, split: str = "train", exclude: Collection[str] = ()) -> list[dict]:
    """Generate `n` unique arithmetic word problems, deterministically from `seed`.

    Each item is `{"id", "input", "equation", "answer"}`; ids look like `arith-train-0000`
    (`split` names the middle part). Inputs in `exclude` are skipped, which is how the test
    split is kept disjoint from the train split.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    items: list[dict] = []
    seen = set(exclude)
    for _ in range(50 * n + 100):
        if len(items) == n:
            break
        text, equation = _make_problem(rng)
        if text in seen:
            continue
        seen.add(text)
        answer = int(safe_eval(equation))
        item_id = f"arith-{split}-{len(items):04d}"
        items.append({"id": item_id, "input": text, "equation": equation, "answer": answer})
    if len(items) < n:
        raise RuntimeError(f"Could only generate {len(items)} unique problems of {n} requested")
    return items


def _write_jsonl(items: list[dict], path: Path) -> None:
    """Write `items` as one JSON object per line (UTF-8, '\\n' line ends on every OS)."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")


def write_arith_data(
    root: str | Path = "data/arith", n_train: int = 2000, n_test: int = 300, seed: int = 123
) -> dict[str, Path]:
    """Generate the `arith` splits and write `train.jsonl` and `test.jsonl` under `root`.

    The train split is drawn with `seed`, the test split with `seed + 1` and without any train
    input. Returns `{"train": path, "test": path}`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train = generate_arith(n_train, seed, split="train")
    exclude = frozenset(item["input"] for item in train)
    test = generate_arith(n_test, seed + 1, split="test", exclude=exclude)
    paths = {"train": root / "train.jsonl", "test": root / "test.jsonl"}
    _write_jsonl(train, paths["train"])
    _write_jsonl(test, paths["test"])
    return paths
