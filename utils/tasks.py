"""Tasks for the course: the bundled `arith` data set, the paper's four tasks, loaders and metrics.

`arith` is a synthetic set of arithmetic word problems in the style of SVAMP (Patel et al.
2021): each item has a word problem (`input`), an equation label in SVAMP spacing
(`( ( 24 - 9 ) * 3 )`) and its value (`answer`). Students are scored on the value of the
equation they produce, computed by `safe_eval`, a small evaluator that never runs Python code.

The paper's tasks (`PAPER_TASK_NAMES`) come from the Hugging Face Hub when the machine is online,
or from a local copy of the authors' released files (`load_task(..., data_dir=...)`). Their rows
are `{"id", "input", "label"}`, formatted as the authors formatted them:

- `svamp`: body and question joined by a newline; the label is the equation. The hub copy
  (ChilleD/SVAMP, 700 + 300) is re-split into the paper's 800 train / 200 test.
- `cqa`: `question\nAnswer Choices:\n(a) ...\n(e) ...`; the label is the answer TEXT (the
  released `cqa_*.json` files come from cos_e, whose `answer` field is the text, not the letter).
- `esnli`, `anli1`: `Premise: ...\nHypothesis: ...`; labels entailment / neutral / contradiction.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import re
import socket
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

# The tasks that run offline from files in this repository. The paper's tasks are listed apart
# because they need the hub or a local copy of the authors' files (and config validation and
# tests rely on TASK_NAMES meaning "bundled").
TASK_NAMES = ("arith",)
PAPER_TASK_NAMES = ("svamp", "cqa", "esnli", "anli1")
ALL_TASK_NAMES = TASK_NAMES + PAPER_TASK_NAMES
SPLITS = ("train", "test")
NLI_LABELS = ("entailment", "neutral", "contradiction")  # the class ids 0, 1, 2 of e-SNLI and ANLI
REGENERATE_HINT = 'python -c "from utils.tasks import write_arith_data; write_arith_data()"'

# Limits of safe_eval: generous for SVAMP-sized equations, small enough that no input can make
# the evaluator slow or huge (integer arithmetic on big literals is the classic way to hang).
MAX_EXPRESSION_CHARS = 200
MAX_NESTING = 20
MAX_LITERAL = 1e12
MAX_RESULT = 1e15

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
class TaskSpec:
    """Facts about a task that other modules (prompts, parsing, metrics, data cards) need.

    `hub_splits` maps the course's split names to the hub's (`()` for tasks without a hub copy);
    `license` is the license of the task's inputs and labels, quoted in data cards.
    """

    name: str
    description: str
    label_field: str = "equation"
    metric: str = "equation value"
    answer_prefix: str = "The answer is"
    splits: tuple[str, ...] = SPLITS
    hub_id: str | None = None
    hub_splits: tuple[tuple[str, str], ...] = ()
    license: str = "Apache-2.0 (generated by this course with utils.tasks.write_arith_data)"
    citation: str = ""


_TASK_SPECS = (
    TaskSpec(
        name="arith",
        description="Synthetic SVAMP-style arithmetic word problems; the label is an equation.",
    ),
    TaskSpec(
        name="svamp",
        description="SVAMP arithmetic word problems (the paper's 800/200 split); the label is an equation.",
        label_field="label",
        # Both hub splits are loaded and re-split the paper's way (see paper_svamp_split).
        hub_id="ChilleD/SVAMP",
        hub_splits=(("train", "train+test"), ("test", "train+test")),
        license="MIT",
        citation="Patel, Bhattamishra and Goyal (2021), Are NLP Models really able to Solve Simple Math Word Problems?",
    ),
    TaskSpec(
        name="cqa",
        description="CommonsenseQA, five answer choices; the label is the answer text.",
        label_field="label",
        metric="label accuracy",
        answer_prefix="So the answer is",
        # The hub's test split has no labels; the paper (through cos_e v1.11) tests on validation.
        hub_id="tau/commonsense_qa",
        hub_splits=(("train", "train"), ("test", "validation")),
        license="MIT",
        citation="Talmor et al. (2019), CommonsenseQA; the paper read it through cos_e v1.11 (Rajani et al., 2019).",
    ),
    TaskSpec(
        name="esnli",
        description="e-SNLI natural language inference; labels entailment / neutral / contradiction.",
        label_field="label",
        metric="label accuracy",
        answer_prefix="Answer:",
        splits=("train", "valid", "test"),
        hub_id="esnli/esnli",
        hub_splits=(("train", "train"), ("valid", "validation"), ("test", "test")),
        license="MIT",
        citation="Camburu et al. (2018), e-SNLI: Natural Language Inference with Natural Language Explanations.",
    ),
    TaskSpec(
        name="anli1",
        description="Adversarial NLI, round 1; labels entailment / neutral / contradiction.",
        label_field="label",
        metric="label accuracy",
        answer_prefix="So the answer is",
        splits=("train", "valid", "test"),
        hub_id="facebook/anli",
        hub_splits=(("train", "train_r1"), ("valid", "dev_r1"), ("test", "test_r1")),
        license="CC BY-NC 4.0 (non-commercial use only)",
        citation="Nie et al. (2020), Adversarial NLI: A New Benchmark for Natural Language Understanding.",
    ),
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


class UnsafeExpression(ValueError):
    """An expression that `safe_eval` refuses: not plain arithmetic, too big, or undefined."""


def get_task(name: str) -> TaskSpec:
    """Return the `TaskSpec` of task `name`; raise ValueError listing the valid names."""
    for spec in _TASK_SPECS:
        if spec.name == name:
            return spec
    raise ValueError(f"Unknown task {name!r}. Valid choices: {', '.join(ALL_TASK_NAMES)}.")


def _plural(noun: str) -> str:
    """Plural of a container noun (the few used here are regular)."""
    return noun + "es" if noun.endswith(("x", "ch", "sh")) else noun + "s"


def _all_steps_positive_integers(equation: str) -> bool:
    """True if every intermediate and the final value of `equation` is an integer >= 1.

    Checking every step (not only the result) keeps stories sensible: nobody gives away more
    than they have, and every share is a whole number.
    """
    tree = ast.parse(equation, mode="eval")
    for node in ast.walk(tree.body):
        if isinstance(node, ast.BinOp):
            try:
                value = _eval_node(node, equation, depth=0)
            except UnsafeExpression:  # e.g. a division by a zero difference
                return False
            if value < 1 or value != int(value):
                return False
    return True


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


def _preview(expr: str) -> str:
    """A short repr of `expr` for error messages (inputs may be 10,000 characters long)."""
    return repr(expr if len(expr) <= 60 else expr[:57] + "...")


def _check_text(expr: object) -> None:
    """Reject, before any parsing, inputs that are not short plain strings."""
    if not isinstance(expr, str):
        raise UnsafeExpression(f"expected a string, got {type(expr).__name__}")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise UnsafeExpression(f"expression is {len(expr)} characters long; the limit is {MAX_EXPRESSION_CHARS}")
    if not expr.strip():
        raise UnsafeExpression("empty expression")
    if expr != expr.strip():
        raise UnsafeExpression(f"surrounding whitespace in {_preview(expr)}; strip it first")
    depth = 0
    for char in expr:
        depth += (char in "([{") - (char in ")]}")
        if depth > MAX_NESTING:
            raise UnsafeExpression(f"brackets nested deeper than {MAX_NESTING} levels")


def _literal(value: object, expr: str) -> int | float:
    """Return `value` if it is a finite int or float of sensible size, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsafeExpression(f"constant of type {type(value).__name__} is not allowed in {_preview(expr)}")
    if not math.isfinite(value) or abs(value) > MAX_LITERAL:
        raise UnsafeExpression(f"number out of range (|x| <= {MAX_LITERAL:g}) in {_preview(expr)}")
    return value


def _apply(op: ast.operator, left: int | float, right: int | float, expr: str) -> int | float:
    """Apply one of + - * / to two numbers; reject every other operator."""
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Div):
        if right == 0:
            raise UnsafeExpression(f"division by zero in {_preview(expr)}")
        return left / right
    raise UnsafeExpression(f"operator {type(op).__name__} is not allowed (only + - * /) in {_preview(expr)}")


def _eval_node(node: ast.AST, expr: str, depth: int) -> int | float:
    """Evaluate an arithmetic AST node, refusing anything but numbers, + - * / and signs."""
    if depth > MAX_NESTING:
        raise UnsafeExpression(f"expression nested deeper than {MAX_NESTING} levels")
    if isinstance(node, ast.Constant):
        return _literal(node.value, expr)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_node(node.operand, expr, depth + 1)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left = _eval_node(node.left, expr, depth + 1)
        right = _eval_node(node.right, expr, depth + 1)
        value = _apply(node.op, left, right, expr)
        # Checked after every step, so no chain of operations can grow a huge number.
        if not math.isfinite(value) or abs(value) > MAX_RESULT:
            raise UnsafeExpression(f"result out of range (|x| <= {MAX_RESULT:g}) in {_preview(expr)}")
        return value
    kind = type(node.op).__name__ if isinstance(node, ast.UnaryOp) else type(node).__name__
    raise UnsafeExpression(f"{kind} is not allowed in an arithmetic expression: {_preview(expr)}")


def safe_eval(expr: str) -> float:
    """Evaluate a plain arithmetic expression such as `( ( 24 - 9 ) * 3 )` without running code.

    Allowed: int and float literals, + - * /, unary + and -, parentheses. Anything else (names,
    calls, attributes, `**`, booleans, strings, whitespace around the expression, over-long or
    over-nested input, huge numbers, division by zero) raises `UnsafeExpression`. The input is
    parsed with `ast.parse` and walked by hand; it is never passed to eval, exec or compile.
    """
    _check_text(expr)
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        raise UnsafeExpression(f"not a valid arithmetic expression: {_preview(expr)}") from err
    return float(_eval_node(tree.body, expr, depth=0))


def _to_value(value: str | float | int | None) -> float | None:
    """Numeric value of a number or an equation string; None if there is none."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return safe_eval(value.strip())
        except UnsafeExpression:
            return None
    return None


def answers_match(pred: str | float | None, gold: str | float, tol: float = 1e-4) -> bool:
    """True if `pred` and `gold` have the same value, each given as a number or an equation.

    A prediction that is None, unparsable or unsafe is simply wrong (False, never an error);
    surrounding whitespace is ignored. The tolerance is absolute up to 1 and relative above,
    so `( 84.0 / 2.0 )` matches 42 and 1/3 matches 0.3333. A gold without a value raises
    ValueError, because that is a bug in the data, not a wrong answer.
    """
    gold_value = _to_value(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} has no numeric value")
    pred_value = _to_value(pred)
    if pred_value is None:
        return False
    return abs(pred_value - gold_value) <= tol * max(1.0, abs(gold_value))


def equation_accuracy(preds: list, golds: list) -> float:
    """Share of predictions whose value matches the gold value (see `answers_match`)."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} gold answers")
    if not golds:
        raise ValueError("equation_accuracy needs at least one example")
    return sum(answers_match(p, g) for p, g in zip(preds, golds, strict=True)) / len(golds)


def _repo_root() -> Path:
    """The repository root: the folder that holds the `utils` package."""
    return Path(__file__).resolve().parent.parent


def _read_jsonl(path: Path, limit: int | None) -> list[dict]:
    """Read up to `limit` JSON objects from `path`, naming the line of any broken one."""
    rows: list[dict] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if limit is not None and len(rows) >= limit:
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not valid JSON ({err.msg})") from err
    return rows


def load_task(name: str, split: str, limit: int | None = None, data_dir: str | Path | None = None) -> list[dict]:
    """Load split `split` of task `name` as a list of dicts.

    `arith` ("train" or "test") is read from `data/arith/<split>.jsonl` in the repository, or from
    `data_dir` (the folder holding the `.jsonl` files) when given. A paper task (`svamp`, `cqa`,
    `esnli`, `anli1`; splits in `get_task(name).splits`) is read from `data_dir` when given, in the
    authors' released layout (`<data_dir>/<name>/<name>_<split>.json`, see `read_paper_split`),
    else downloaded from the Hugging Face Hub (`get_task(name).hub_id`); offline, that raises
    `HubUnavailableError` saying what to do. `limit` keeps the first rows only.
    """
    spec = get_task(name)
    split = _canonical_split(spec, split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    if name in PAPER_TASK_NAMES:
        if data_dir is not None:
            rows = read_paper_split(data_dir, name, split)
        else:
            rows = load_hub_split(name, split)
        return rows if limit is None else rows[:limit]
    folder = Path(data_dir) if data_dir is not None else _repo_root() / "data" / name
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Regenerate the data from the repository root with: {REGENERATE_HINT}"
        )
    return _read_jsonl(path, limit)


def _canonical_split(spec: TaskSpec, split: str) -> str:
    """The course's name for `split` ("validation" is accepted for "valid"), or a ValueError."""
    if split == "validation" and "valid" in spec.splits:
        split = "valid"
    if split not in spec.splits:
        raise ValueError(f"Unknown split {split!r}. Valid choices: {', '.join(spec.splits)}.")
    return split


# --- the paper's tasks: formatting, the authors' files, the hub --------------------------------

PAPER_DATA_URL = "https://github.com/google-research/distilling-step-by-step/raw/main/datasets.zip"
_LETTERS = "abcde"


class HubUnavailableError(ConnectionError):
    """A paper task's data could not be fetched from the Hugging Face Hub; the message says what to do."""


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


def _nli_label(value: object, task: str) -> str:
    """`entailment` / `neutral` / `contradiction` from a class id (0, 1, 2) or a label string."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(NLI_LABELS):
        return NLI_LABELS[value]
    if isinstance(value, str) and value.strip().lower() in NLI_LABELS:
        return value.strip().lower()
    raise ValueError(f"{task}: label {value!r} is not one of 0, 1, 2 or {', '.join(NLI_LABELS)}")


def _require(row: dict, fields: tuple[str, ...], task: str, where: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise ValueError(f"{where}: a {task} row lacks the field(s) {missing}; it has {sorted(row)}.")


def paper_example(task: str, row: dict, index: int, split: str, where: str = "row") -> dict:
    """One row of a paper task, from any of its shapes, as `{"id", "input", "label"}`.

    Accepted shapes: already formatted (`input`, `label`); the authors' released files (cos_e
    `question`/`choices`/`answer` for cqa, `premise`/`hypothesis`/`label` with class ids for
    the NLI tasks); the hub rows (`Body`/`Question`/`Equation` for SVAMP, `choices` as
    `{"label", "text"}` and `answerKey` for CommonsenseQA). A missing field is an error naming it.
    """
    row_id = next((str(row[k]) for k in ("id", "uid", "ID") if row.get(k) not in (None, "")), None)
    example = {"id": row_id or f"{task}-{split}-{index}"}
    if task == "svamp":
        if "input" in row:
            _require(row, ("input", "label"), task, where)
            example.update(input=row["input"], label=str(row["label"]))
        else:
            _require(row, ("Body", "Question", "Equation"), task, where)
            example.update(input=f"{row['Body']}\n{row['Question']}", label=row["Equation"])
        if row.get("Answer") is not None:
            example["answer"] = float(row["Answer"])
    elif task == "cqa":
        if "input" in row:
            _require(row, ("input", "label"), task, where)
            example.update(input=row["input"], label=str(row["label"]))
        else:
            _require(row, ("question", "choices"), task, where)
            choices = row["choices"]
            texts = choices["text"] if isinstance(choices, dict) else list(choices)
            if "answer" in row:
                label = row["answer"]
            else:
                _require(row, ("answerKey",), task, where)
                keys = [k.lower() for k in choices["label"]] if isinstance(choices, dict) else list(_LETTERS)
                key = str(row["answerKey"]).lower()
                if key not in keys:
                    raise ValueError(f"{where}: answerKey {row['answerKey']!r} is not among the choices {keys}.")
                label = texts[keys.index(key)]
            example.update(input=format_cqa(row["question"], texts), label=str(label))
    elif task in ("esnli", "anli1"):
        if "input" in row:
            _require(row, ("input", "label"), task, where)
            example.update(input=row["input"], label=_nli_label(row["label"], task))
        else:
            _require(row, ("premise", "hypothesis", "label"), task, where)
            example.update(input=format_nli(row["premise"], row["hypothesis"]), label=_nli_label(row["label"], task))
    else:
        raise ValueError(f"{task!r} is not a paper task. Paper tasks: {', '.join(PAPER_TASK_NAMES)}.")
    return example


def paper_split_path(root: str | Path, task: str, split: str) -> Path:
    """Where the authors' layout keeps the inputs of a split: `<root>/<task>/<task>_<split>.json`.

    `root` may also be the task folder itself.
    """
    root = Path(root)
    folder = root if (root / f"{task}_{split}.json").is_file() or root.name == task else root / task
    return folder / f"{task}_{split}.json"


def read_paper_split(root: str | Path, task: str, split: str) -> list[dict]:
    """The inputs and gold labels of one split in the authors' released layout, formatted (`paper_example`).

    The files hold one JSON object per line (what `Dataset.to_json` writes).
    """
    spec = get_task(task)
    split = _canonical_split(spec, split)
    path = paper_split_path(root, task, split)
    if not path.is_file():
        present = sorted(p.name for p in path.parent.glob(f"{task}_*.json")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"{path} does not exist (files there: {present or 'none'}). The authors' layout is "
            f"<root>/{task}/{task}_<split>.json; get it with utils.data.download_paper_data(dest) on a "
            "machine with internet."
        )
    rows = _read_jsonl(path, None)
    return [paper_example(task, row, i, split, where=f"{path}:{i + 1}") for i, row in enumerate(rows)]


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
        f"machine with internet run utils.data.download_paper_data(dest) (it fetches {PAPER_DATA_URL}), copy "
        f"the unzipped datasets/ folder here, then call utils.data.load_paper_rationales(root, {task!r}, "
        f"{split!r}) or utils.tasks.load_task({task!r}, {split!r}, data_dir=root); (2) if this dataset was "
        "downloaded before, set HF_DATASETS_OFFLINE=1 to use the cached copy; (3) use the bundled offline "
        f"task 'arith'.{detail}"
    )


def load_hub_split(task: str, split: str) -> list[dict]:
    """One split of a paper task from the Hugging Face Hub, formatted like the paper (`paper_example`).

    Hub ids: SVAMP `ChilleD/SVAMP` (MIT; both splits, re-split the paper's way), CommonsenseQA
    `tau/commonsense_qa` (MIT; test = validation, as in the paper), e-SNLI `esnli/esnli` (MIT),
    ANLI `facebook/anli` (CC BY-NC 4.0; splits train_r1 / dev_r1 / test_r1). Rows without a gold
    label (class id -1) are skipped. Any failure raises one `HubUnavailableError`.
    """
    spec = get_task(task)
    split = _canonical_split(spec, split)
    if spec.hub_id is None:
        raise ValueError(f"Task {task!r} has no hub copy; load it with load_task({task!r}, {split!r}).")
    hub_split = dict(spec.hub_splits)[split]
    if not _hub_offline_flag() and not _hub_reachable():
        raise _hub_error(task, split, spec.hub_id, hub_split, None)
    try:
        from datasets import load_dataset

        if task == "svamp":
            parts = load_dataset(spec.hub_id)
            items = [dict(row) for name in ("train", "test") for row in parts[name]]
        else:
            items = [dict(row) for row in load_dataset(spec.hub_id, split=hub_split)]
    except Exception as err:  # whatever the hub or the cache says, the user gets one clear message
        raise _hub_error(task, split, spec.hub_id, hub_split, err) from err
    if task == "svamp":
        items = paper_svamp_split(items)[split]
    if task in ("esnli", "anli1"):
        items = [row for row in items if row.get("label") in (0, 1, 2)]
    return [paper_example(task, row, i, split, where=f"{spec.hub_id}[{hub_split}][{i}]") for i, row in enumerate(items)]


# --- metrics for every task ----------------------------------------------------------------------

# What a teacher may write for an NLI class (PaLM's ANLI prompts offer yes / no / it is not possible to tell).
_NLI_SYNONYMS = {
    "yes": "entailment",
    "true": "entailment",
    "entails": "entailment",
    "entailed": "entailment",
    "no": "contradiction",
    "false": "contradiction",
    "contradicts": "contradiction",
    "contradictory": "contradiction",
    "it is not possible to tell": "neutral",
    "not possible to tell": "neutral",
    "it's not possible to tell": "neutral",
    "maybe": "neutral",
    "unknown": "neutral",
    "neither": "neutral",
}


def normalize_label(task: str, label: object) -> str | None:
    """A classification label reduced to what must match: lower case, no quotes, no final period.

    CommonsenseQA drops a leading choice letter (`(b) bank` -> `bank`); the NLI tasks map the
    synonyms teachers write (`yes` -> `entailment`, `it is not possible to tell` -> `neutral`).
    None for None or an empty label.
    """
    if label is None:
        return None
    text = " ".join(str(label).split()).lower().strip(" .\"'`*")
    if task == "cqa":
        text = re.sub(r"^\(?[a-e]\)\s+(?=\S)", "", text)
    if task in ("esnli", "anli1"):
        text = _NLI_SYNONYMS.get(text, text)
    return text or None


def task_correct(task: str, pred: str | float | None, gold: str | float) -> bool:
    """Whether a prediction is right for `task`.

    Equation tasks (`arith`, `svamp`) compare values (`answers_match`); classification tasks
    compare `normalize_label` strings. None or an unparsable prediction is simply wrong.
    """
    spec = get_task(task)
    if spec.metric == "equation value":
        return answers_match(pred, gold)
    gold_key = normalize_label(task, gold)
    if gold_key is None:
        raise ValueError(f"gold label {gold!r} is empty")
    return pred is not None and normalize_label(task, pred) == gold_key


def task_accuracy(task: str, preds: list, golds: list) -> float:
    """Share of predictions that `task_correct` accepts."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} gold answers")
    if not golds:
        raise ValueError("task_accuracy needs at least one example")
    return sum(task_correct(task, p, g) for p, g in zip(preds, golds, strict=True)) / len(golds)


def count_ops(equation: str) -> int:
    """How many arithmetic operations an equation label has (a unary minus counts too)."""
    return sum(equation.count(op) for op in "+-*/")


def select_examples(name: str, split: str, n: int | None = None, max_ops: int | None = None) -> list[dict]:
    """The first ``n`` examples of a split, keeping only labels with at most ``max_ops`` operations.

    The bundled teacher is weak; the ``tiny`` profile keeps one-operation problems so that
    its rationales are right often enough to learn from.
    """
    examples = load_task(name, split)
    if max_ops is not None:
        spec = get_task(name)
        examples = [ex for ex in examples if count_ops(str(ex[spec.label_field])) <= max_ops]
    return examples[:n] if n else examples
