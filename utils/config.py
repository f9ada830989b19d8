"""Run configuration: profiles, seeds, devices and run folders.

A profile is a named set of defaults (``tiny``, ``colab``, ``paper``); every value can be
overridden by keyword. The profile comes from the argument, else ``DSS_PROFILE``, else ``tiny``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunConfig:
    """Every knob of a run. Profiles below fill it; the comments say what each value means."""

    profile: str = "tiny"  # tiny | colab | paper
    task: str = "arith"  # arith (bundled) | svamp | cqa | esnli | anli1 (the paper's; hub or local files)
    seed: int = 123  # one seed for data order, sampling and initialisation
    # --- teacher (notebook 01) ---
    teacher_backend: str = "llamacpp"  # llamacpp | transformers | ollama | openai | vllm (GPU, optional)
    teacher_model: str = "smollm2-135m-instruct"  # bundled name, hub id, local path or server tag
    teacher_base_url: str | None = None  # server address for ollama/openai; None: env or default
    n_shots: int = 6  # few-shot CoT exemplars in the prompt
    n_samples: int = 4  # self-consistency: answers per training input, the first greedy (1 = greedy only)
    temperature: float = 0.8  # sampling temperature of answers 2..n
    max_new_tokens: int = 64  # teacher budget per answer, rationale included
    max_ops: int | None = 1  # keep problems with at most this many operations (None: all)
    n_train: int | None = 300  # training inputs the teacher annotates (None: all)
    n_test: int | None = 100  # test inputs for teacher and student evaluation (None: all)
    teacher_cache_seed: str | None = "data/teacher_cache/arith-smollm2.jsonl"  # committed outputs reused
    # --- dataset (notebook 02) ---
    rationale_policy: str = "correct"  # all | correct | gold: which teacher rationales to keep
    # --- student (notebook 03) ---
    student_family: str = "causal"  # causal | seq2seq
    student_model: str = "smollm2-135m-instruct"  # the model the student starts from
    student_layers: int | None = 6  # keep this many of the start model's layers (None: all)
    modes: tuple[str, ...] = ("standard", "distill", "dss")  # which students notebook 03 trains
    alpha: float = 0.5  # dss loss = alpha * L_label + (1 - alpha) * L_rationale
    epochs: float = 6.0  # passes over the training rows
    max_steps: int | None = None  # train exactly this many optimizer steps (epochs ignored; rows cycle)
    eval_steps: int | None = None  # with max_steps: validate and checkpoint every this many steps
    learning_rate: float = 3e-4  # AdamW peak learning rate (linear decay)
    batch_size: int = 16  # rows per step (label and rationale rows together)
    max_source_length: int = 128  # input tokens kept
    max_target_length: int = 96  # target tokens kept (rationales are the long ones)
    # Too-long sources and targets are cut in the middle (utils.prompting.cut_middle): the task
    # prefix, the question at the end and a rationale's final answer always survive.
    # --- student options (utils.student; validated in validate_config) ---
    label_source: str = "gold"  # gold | teacher: the labels dss learns beside the rationales
    rationale_answer: bool = False  # end each rationale target with "The answer is <its own answer>."
    chat_template: bool = False  # causal prompts as a chat turn (when the tokenizer has a template)
    lora: bool | dict | None = None  # True or {"r", "alpha", "dropout", "targets"}: train LoRA adapters
    bf16: bool | None = None  # None: bf16 autocast where it is fast (utils.config.use_bf16); False: fp32
    save_steps: float | None = None  # checkpoint every N steps (<1: that fraction of an epoch; 0: never)
    keep_checkpoints: bool = False  # keep checkpoints after a successful run (else removed)
    select_by: str = "loss"  # loss | accuracy: how the best validation checkpoint is chosen
    early_stopping_patience: int | None = None  # stop after this many evaluations without improvement
    early_stopping_min_steps: int = 0  # evaluations before this many optimizer steps never stop a run
    pack_rows: bool = False  # causal students: a batch's rows packed end to end, no padding; same loss
    prune_vocab: bool = False  # vocabulary cut to the run's tokens (BPE, Unigram, WordLevel); same logits on them
    torch_compile: bool = False  # train through torch.compile (inductor): faster steps, minutes to compile
    flush_denormal: bool = True  # CPU: floats below 1.2e-38 become 0 while training (utils.student.flushed_denormals)
    # --- evaluation (notebook 04) ---
    eval_batch_size: int = 16  # rows per generate() call
    # --- where things go ---
    runs_root: str = "runs"  # run folders live here; runs/latest points at the newest
    extra: dict = field(default_factory=dict)  # free-form notes a user wants recorded (nothing reads them)

    def to_dict(self) -> dict:
        """Plain-JSON view of the config (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


PROFILES: dict[str, dict] = {
    # CPU, offline, minutes: the bundled SmolLM2-135M-Instruct teaches a 6-layer cut of itself.
    # Packed rows and a pruned vocabulary: the same students, trained faster (see benchmarks/).
    "tiny": {"pack_rows": True, "prune_vocab": True},
    # One T4/L4-class GPU with internet: a 1.5B instruct teacher, a flan-t5 student.
    "colab": {
        "teacher_backend": "transformers",
        "teacher_model": "Qwen/Qwen2.5-1.5B-Instruct",
        "n_samples": 4,
        "max_new_tokens": 128,
        "max_ops": None,
        "teacher_cache_seed": None,
        "n_train": 1000,
        "n_test": 300,
        "student_family": "seq2seq",
        "student_model": "google/flan-t5-base",
        "student_layers": None,
        "epochs": 10.0,
        "learning_rate": 5e-4,
        "batch_size": 32,
        "max_source_length": 256,
        "max_target_length": 192,
        "eval_batch_size": 64,
    },
    # The paper's student (T5 v1.1 base, 220M); the paper's own tasks arrive with its loaders.
    "paper": {
        "teacher_backend": "openai",
        "teacher_model": "Qwen/Qwen2.5-7B-Instruct",
        "n_samples": 1,
        "temperature": 0.0,
        "max_ops": None,
        "teacher_cache_seed": None,
        "max_new_tokens": 256,
        "n_train": None,
        "n_test": None,
        "student_family": "seq2seq",
        "student_model": "google/t5-v1_1-base",
        "student_layers": None,
        "epochs": 20.0,
        "learning_rate": 5e-5,
        "batch_size": 64,
        "max_source_length": 1024,
        "max_target_length": 256,
        "eval_batch_size": 64,
    },
}

VALID_CHOICES = {
    "teacher_backend": ("llamacpp", "transformers", "ollama", "openai", "vllm"),
    "student_family": ("causal", "seq2seq"),
    "rationale_policy": ("all", "correct", "gold"),
}
VALID_MODES = ("standard", "distill", "dss", "ltr")


def load_config(profile: str | None = None, **overrides) -> RunConfig:
    """Build the config of a profile, then apply keyword overrides.

    Raises ValueError naming the valid choices for an unknown profile, field or value.
    """
    name = profile or os.environ.get("DSS_PROFILE") or "tiny"
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}. Valid profiles: {', '.join(PROFILES)}.")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Unknown config field(s) {unknown}. Valid fields: {', '.join(sorted(known))}.")
    values = {**PROFILES[name], **overrides, "profile": name}
    values.update(_student_options_from_extra(values, known))
    if "modes" in values:
        values["modes"] = tuple([values["modes"]] if isinstance(values["modes"], str) else values["modes"])
    config = RunConfig(**values)
    validate_config(config)
    return config


STUDENT_OPTIONS = ("label_source", "rationale_answer", "chat_template", "lora", "bf16", "save_steps",
                   "keep_checkpoints", "select_by", "early_stopping_patience", "early_stopping_min_steps")
LORA_KEYS = ("r", "alpha", "dropout", "targets")


def _student_options_from_extra(values: dict, known: set[str]) -> dict:
    """Student options that older run folders kept in ``extra`` become the typed fields they are now."""
    extra = dict(values.get("extra") or {})
    moved = {k: extra.pop(k) for k in STUDENT_OPTIONS if k in extra and k not in values}
    return {**moved, "extra": extra} if moved else {}


def validate_config(config: RunConfig) -> None:
    """Check the values that have a closed set of choices or a range."""
    from utils.tasks import ALL_TASK_NAMES

    if config.task not in ALL_TASK_NAMES:
        raise ValueError(f"Unknown task {config.task!r}. Valid tasks: {', '.join(ALL_TASK_NAMES)}.")
    for name, choices in VALID_CHOICES.items():
        value = getattr(config, name)
        if value not in choices:
            raise ValueError(f"Unknown {name} {value!r}. Valid choices: {', '.join(choices)}.")
    bad_modes = [m for m in config.modes if m not in VALID_MODES]
    if bad_modes or not config.modes:
        raise ValueError(f"Unknown mode(s) {bad_modes}. Valid modes: {', '.join(VALID_MODES)}.")
    if not 0.0 <= config.alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {config.alpha}.")
    if config.n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {config.n_samples}.")
    validate_student_options(config)


def validate_student_options(config: RunConfig) -> None:
    """The one place the student's options are checked, with the valid choices in each message."""
    if config.label_source not in ("gold", "teacher"):
        raise ValueError(f"Unknown label_source {config.label_source!r}. Valid choices: gold, teacher "
                         "(gold labels or the teacher's, next to its rationales).")
    for name in ("rationale_answer", "chat_template", "keep_checkpoints", "pack_rows", "prune_vocab", "torch_compile",
                 "flush_denormal"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}.")
    if config.bf16 not in (None, True, False):
        raise ValueError(f"bf16 must be None (where fast), True or False, got {config.bf16!r}.")
    if config.lora not in (None, True, False) and not isinstance(config.lora, dict):
        raise ValueError(f"lora must be True or a dict with keys {list(LORA_KEYS)}, got {config.lora!r}.")
    if isinstance(config.lora, dict):
        unknown = sorted(set(config.lora) - set(LORA_KEYS))
        if unknown:
            raise ValueError(f"Unknown LoRA setting(s) {unknown}. Valid keys: {', '.join(LORA_KEYS)}.")
    if config.save_steps is not None and (isinstance(config.save_steps, bool) or config.save_steps < 0):
        raise ValueError(f"save_steps must be None, 0 (no checkpoints), a fraction of an epoch below 1 or a "
                         f"number of steps, got {config.save_steps!r}.")
    for name in ("max_steps", "eval_steps"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be None or a whole number of optimizer steps >= 1, got {value!r}.")
    if config.eval_steps is not None and config.max_steps is None:
        raise ValueError("eval_steps needs max_steps: a schedule counted in optimizer steps (set both).")
    if config.select_by not in ("loss", "accuracy"):
        raise ValueError(f"Unknown select_by {config.select_by!r}. Valid choices: loss (lowest validation loss), "
                         "accuracy (highest validation accuracy, label-only decoding).")
    patience = config.early_stopping_patience
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"early_stopping_patience must be None or a whole number of evaluations >= 1, got {patience!r}.")
    floor = config.early_stopping_min_steps
    if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
        raise ValueError(f"early_stopping_min_steps must be a whole number of optimizer steps >= 0, got {floor!r}.")
    for name in ("max_source_length", "max_target_length"):
        if getattr(config, name) < 2:
            raise ValueError(f"{name} must be at least 2 tokens (both ends of a text are kept), "
                             f"got {getattr(config, name)}.")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated (``transformers.set_seed``)."""
    from transformers import set_seed

    set_seed(seed)


def pick_device(verbose: bool = True, profile: str | None = None) -> str:
    """CUDA, then Apple MPS, then CPU; prints the choice (and, given the run's ``profile``, says
    when a GPU would serve a bigger one: ``tiny`` is sized for a CPU and leaves a GPU idle)."""
    import torch

    if torch.cuda.is_available():
        device = "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    if verbose:
        name = f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""
        print(f"device: {device}{name}")
        if device == "cuda" and profile == "tiny":
            print('A GPU is present: PROFILE = "colab" (a 1.5B teacher, a flan-t5-base student) is the profile '
                  "sized for it; tiny runs here too, but is made for a CPU.")
    return device


def use_bf16(device: str) -> bool:
    """bf16 only where it is fast: a CUDA GPU of compute capability 8.0 or more (Ampere: A100, L4,
    RTX 30xx, and later), or a CPU with avx512_bf16.

    ``torch.cuda.is_bf16_supported()`` alone is not enough: it is true on a T4 (7.5), where bf16 is
    emulated and slower than fp32; there the trainer uses fp16 autocast instead (see
    ``utils.student.training_arguments``). On AVX2-only CPUs bf16 autocast was measured 20 times
    slower than fp32, so it stays off.
    """
    import torch

    if device == "cuda":
        return torch.cuda.get_device_capability()[0] >= 8 and torch.cuda.is_bf16_supported()
    if device == "cpu":
        checker = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return bool(checker and checker())
    return False


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages whose behaviour the results depend on."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "transformers", "datasets", "evaluate", "accelerate", "peft",
             "llama_cpp_python", "ollama", "openai", "matplotlib"]
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: a crash or Ctrl-C
    leaves either the old file or the new one, never half of one. Every file a run writes uses it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_json(path: str | Path, payload, **dumps_options) -> Path:
    """``atomic_write_text`` of ``payload`` as indented JSON (``default=str`` for paths and dates)."""
    return atomic_write_text(path, json.dumps(payload, indent=2, default=str, **dumps_options))


def make_run_dir(root: str | Path = "runs", run_id: str | None = None) -> Path:
    """Create ``root/<run_id>`` (default: a timestamp) and point ``root/latest`` at it."""
    root = Path(root)
    if not root.is_absolute():
        root = REPO_ROOT / root
    run_id = run_id or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = root / "latest"
    tmp = root / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        tmp.symlink_to(run_id)
    except OSError:  # Google Drive (and some other mounts) has no symlinks: a text file names the run
        atomic_write_text(root / LATEST_FILE, run_id)
        return run_dir
    os.replace(tmp, latest)  # atomic: a reader never sees a missing link
    return run_dir


LATEST_FILE = "latest.txt"  # where symlinks are impossible (Google Drive), the newest run's name


def latest_run_dir(root: str | Path = "runs") -> Path | None:
    """The run ``root/latest`` points at (or ``root/latest.txt`` names), or None when there is none."""
    root_path = Path(root) if Path(root).is_absolute() else REPO_ROOT / root
    latest = root_path / "latest"
    if latest.exists():
        return latest.resolve()
    named = root_path / LATEST_FILE
    if named.exists() and (root_path / named.read_text().strip()).is_dir():
        return root_path / named.read_text().strip()
    return None


def resolve_run_dir(run_dir: str | Path | None = None, root: str | Path = "runs") -> Path:
    """The given run folder, else the latest under ``root``, else a new one, and says which.

    A new or empty folder holds no earlier stage's files: notebooks 02-05 follow this call with
    ``require_stage``, which names the command that writes them (or runs it), so an empty folder
    never ends in a bare ``FileNotFoundError``.
    """
    if run_dir:
        path = Path(run_dir)
        if not path.is_absolute():
            path = REPO_ROOT / path
        if not path.exists():
            print(f"{path} does not exist yet: created (empty)")
        path.mkdir(parents=True, exist_ok=True)
        return path
    found = latest_run_dir(root)
    if found is not None:
        return found
    path = make_run_dir(root)
    print(f"no run under {root} yet: a new, empty run folder {path}")
    return path


# What each notebook leaves in a run folder, in the order they run: a later stage needs the earlier ones.
STAGES = {
    "teacher": ("01_teacher_cot", ("teacher/train_records.jsonl", "teacher/test_records.jsonl")),
    "dataset": ("02_rationale_dataset", ("dataset/dataset_dict.json",)),
    "student": ("03_multitask_student", ("student/*/student_meta.json",)),
    "evaluation": ("04_eval_vs_teacher", ("eval/predictions_*.jsonl",)),
}


class MissingStageError(FileNotFoundError):
    """A run folder lacks what an earlier notebook writes; the message says which command writes it."""


def stage_done(run_dir: str | Path, stage: str) -> bool:
    """Whether ``run_dir`` holds every file ``stage`` writes (``STAGES``)."""
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}. Stages: {', '.join(STAGES)}.")
    return all(any(Path(run_dir).glob(pattern)) for pattern in STAGES[stage][1])


def stage_command(notebook: str, run_dir: str | Path, profile: str | None = None) -> list[str]:
    """The command that runs ``notebook`` headless into ``run_dir`` (``python -m utils run``)."""
    return [sys.executable, "-m", "utils", "run", notebook[:2], "--run-dir", str(run_dir),
            "--profile", profile or os.environ.get("DSS_PROFILE") or "tiny"]


def _run_stage(notebook: str, run_dir: Path, profile: str | None) -> None:
    import subprocess

    subprocess.run(stage_command(notebook, run_dir, profile), cwd=REPO_ROOT, check=True)


def require_stage(run_dir: str | Path, stage: str, run_missing: bool = False, profile: str | None = None,
                  runner=None) -> list[str]:
    """Make sure ``run_dir`` holds ``stage``'s outputs and those of every stage before it.

    When something is missing: with ``run_missing`` the missing notebooks run headless, in order,
    into ``run_dir`` (each announced first; ``runner(notebook, run_dir, profile)`` replaces the
    subprocess in tests); without it, ``MissingStageError`` names the folder, what is missing and
    the command that writes it. Returns the notebooks that ran (empty when nothing was missing).
    """
    run_dir = Path(run_dir)
    names = list(STAGES)
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}. Stages: {', '.join(STAGES)}.")
    needed = names[: names.index(stage) + 1]
    first = next((s for s in needed if not stage_done(run_dir, s)), None)
    if first is None:
        return []
    todo = [STAGES[s][0] for s in needed[needed.index(first):]]
    commands = " && ".join(" ".join(["python -m utils run", n[:2], "--run-dir", str(run_dir)]) for n in todo)
    if not run_missing:
        raise MissingStageError(
            f"The run folder {run_dir} has no {first} stage yet (notebook {STAGES[first][0]} writes "
            f"{', '.join(STAGES[first][1])}). Either run the notebooks before this one: {commands}\n"
            "or set RUN_EARLIER = True in the parameters cell and this notebook runs them itself, or point "
            "RUN_DIR (or RUNS_ROOT, e.g. on Google Drive in Colab) at a run folder that has them.")
    for notebook in todo:
        print(f"{run_dir} lacks notebook {notebook[:2]}'s outputs: running {notebook} headless first "
              f"(python -m utils run {notebook[:2]} --run-dir {run_dir}) ...", flush=True)
        (runner or _run_stage)(notebook, run_dir, profile)
        if not stage_done(run_dir, next(s for s, (n, _) in STAGES.items() if n == notebook)):
            raise MissingStageError(f"{notebook} ran but left no outputs in {run_dir}; see its executed copy "
                                    f"in {run_dir / 'notebooks'}.")
    return todo


def runs_root(root: str | None = None) -> str:
    """Where run folders go: ``root`` when given, else ``runs`` in the repository.

    A root under ``/content/drive`` in Colab mounts Google Drive first, so runs outlive the Colab
    runtime and a notebook opened later in a fresh runtime finds what the earlier ones wrote.
    """
    if not root:
        return "runs"
    if str(root).startswith("/content/drive") and "google.colab" in sys.modules:
        from google.colab import drive  # only importable inside Colab

        if not Path("/content/drive/MyDrive").exists():
            drive.mount("/content/drive")
    Path(root).mkdir(parents=True, exist_ok=True)
    return str(root)


def colab_extras(config: RunConfig, install: bool = True) -> list[str]:
    """Packages ``config`` needs beyond ``requirements-colab.txt`` (installed there when in Colab).

    Only the ``llamacpp`` backend (the ``tiny`` teacher) needs one: ``llama-cpp-python``, whose source
    build takes minutes, so it is installed only for the runs that use it, from the project's
    prebuilt CPU wheels.
    """
    needed = []
    if config.teacher_backend == "llamacpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            needed.append("llama-cpp-python==0.3.36")
    if needed and install and "google.colab" in sys.modules:
        import subprocess

        print("installing", ", ".join(needed), "for the", config.teacher_backend, "teacher ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *needed, "--extra-index-url",
                        "https://abetlen.github.io/llama-cpp-python/whl/cpu"], check=True)
    return needed


def machine_info() -> dict:
    """What a reader needs to compare timings: platform, processor, cores, bf16 support, GPU."""
    import torch

    processor = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": processor, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "bf16": use_bf16(pick_device(verbose=False)), "gpu": gpu}


def save_run_metadata(run_dir: Path, config: RunConfig, stage: str) -> Path:
    """Write the config, seed and package versions of a stage next to its results."""
    out = Path(run_dir) / f"{stage}_meta.json"
    meta = {"stage": stage, "config": config.to_dict(), "versions": package_versions()}
    return atomic_write_json(out, meta)


def save_config(config: RunConfig, run_dir: str | Path) -> Path:
    """Write ``config.json`` into the run folder so later stages reuse the same settings."""
    path = Path(run_dir) / "config.json"
    return atomic_write_json(path, config.to_dict())


def load_run_config(run_dir: str | Path, profile: str | None = None, **overrides) -> RunConfig:
    """The config a run was started with (``config.json``), with overrides; else a profile's."""
    path = Path(run_dir) / "config.json"
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not path.exists():
        return load_config(profile, **overrides)
    values = json.loads(path.read_text())
    saved_profile = values.pop("profile")
    return load_config(saved_profile, **{**values, **overrides})
