"""Command line: ``python -m utils demo | run NOTEBOOK | report RUN_DIR | costs SPEC | teacher | study | convert | serve EXPORT_DIR``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from utils.config import REPO_ROOT

NOTEBOOKS = ("01_teacher_cot", "02_rationale_dataset", "03_multitask_student", "04_eval_vs_teacher", "05_deploy")
# What `demo` passes to the notebooks that declare them, unless --param says otherwise. The notebooks'
# own defaults are the full grid: notebook 04 sweeps 25, 50 and 100 % of the data with 3 seeds and
# times 8 examples, notebook 05 times 16. The demo sweeps 50 and 100 % with one seed (at 25 % every
# student of the tiny profile is near 0: nothing to read) and times 4, to stay within its budget on a
# 2-core CPU: 8 minutes with avx512_bf16, 12 without (the README states the measured times).
# `demo --full-grid` runs the defaults; its committed run is data/results/demo_reference.
DEMO_PARAMETERS = {"SWEEP_FRACTIONS": [0.5, 1.0], "SWEEP_SEEDS": 1, "COST_EXAMPLES": 4}
# What a published demo run leaves out: weights, exports, the dataset and the executed notebooks
# (report.json holds their results; data/results/demo_reference is such a folder).
DEMO_PUBLISH_SKIPS = ("student", "export", "dataset", "autotrain", "notebooks")


def clean_executed(nb) -> str:
    """An executed notebook made fit to publish, as text: widget state and per-cell execution records
    dropped, widget outputs reduced to their text, and this machine's paths written relative (the
    repository root dropped, the home folder as ~), so that a copy changes only when its outputs do."""
    nb.metadata.pop("widgets", None)
    for key in ("input_path", "output_path"):
        nb.metadata.get("papermill", {}).pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if "data" not in o or o["data"]]
    return nbformat_text(nb).replace(f"{REPO_ROOT}/", "").replace(str(REPO_ROOT), ".").replace(str(Path.home()), "~")


def nbformat_text(nb) -> str:
    """A notebook as the repository stores it (nbformat's JSON and a final newline)."""
    import nbformat

    return nbformat.writes(nb) + "\n"


def publish_executed(run_dir: Path, dest: str | Path, timings: dict, params: dict) -> Path:
    """Copy the run's executed notebooks to ``dest`` (cleaned by ``clean_executed``), with
    ``timings.json``: the seconds per notebook, the machine and the parameters they ran with."""
    import nbformat

    from utils.config import atomic_write_json, machine_info

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in NOTEBOOKS:
        nb = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        (dest / f"{name}.ipynb").write_text(clean_executed(nb))
    atomic_write_json(dest / "timings.json", {"seconds": timings, "machine": machine_info(), "parameters": params})
    return dest


def run_notebook(name: str, run_dir: Path, parameters: dict) -> float:
    """Execute one notebook headless with papermill into ``run_dir/notebooks``; returns seconds."""
    import papermill

    matches = [n for n in NOTEBOOKS if n == name or n.startswith(name)]
    if len(matches) != 1:
        raise SystemExit(f"Unknown notebook {name!r}. Notebooks: {', '.join(NOTEBOOKS)}.")
    name = matches[0]
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    source = REPO_ROOT / "notebooks" / f"{name}.ipynb"
    declared = papermill.inspect_notebook(str(source))  # a parameter the notebook lacks is not passed
    start = time.perf_counter()
    papermill.execute_notebook(
        str(source),
        str(out_dir / f"{name}.ipynb"),
        parameters={k: v for k, v in {**parameters, "RUN_DIR": str(run_dir)}.items() if k in declared},
        cwd=str(REPO_ROOT / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
        log_output=True,
    )
    return time.perf_counter() - start


def parse_params(items: list[str]) -> dict:
    """``NAME=JSON`` pairs of ``--param`` as a dict; a value that is not JSON is a clear error."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(f"--param {item!r}: expected NAME=JSON, e.g. SWEEP_SEEDS=3 or "
                             f"'SWEEP_FRACTIONS=[0.5, 1.0]'") from None
        if not sep or not key.isidentifier():
            raise SystemExit(f"--param {item!r}: expected NAME=JSON, e.g. SWEEP_SEEDS=3")
    return params


def check_params(params: dict, notebooks: tuple[str, ...] = NOTEBOOKS) -> None:
    """Stop with a clear error on a parameter no notebook declares (a typo would otherwise be dropped)."""
    import papermill

    declared = set().union(*(papermill.inspect_notebook(str(REPO_ROOT / "notebooks" / f"{n}.ipynb"))
                             for n in notebooks))
    unknown = sorted(set(params) - declared)
    if unknown:
        raise SystemExit(f"No notebook has the parameter(s) {', '.join(unknown)}. "
                         f"Parameters: {', '.join(sorted(declared))}.")


def study_sizes_options(args) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The seeds and stages of ``study --design sizes``, or a clear error: the design is e-SNLI's,
    its seeds are distinct integers >= 0 (default 0 1 2), and its only stage is ``report``."""
    from utils.studies.sizes import ESNLI_SEEDS

    if args.task not in (None, "esnli"):
        raise SystemExit(f"--design sizes is the e-SNLI study; --task {args.task} does not apply (omit it).")
    if args.fold:
        raise SystemExit("--fold applies to --design cv and candidates, not to --design sizes.")
    seeds = tuple(args.seed) if args.seed else ESNLI_SEEDS
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seed: distinct integers >= 0, one per --seed (e.g. --seed 0 --seed 1); got {list(seeds)}.")
    stages = tuple(dict.fromkeys(args.stage or ()))
    if stages not in ((), ("report",)):
        raise SystemExit(f"--design sizes has one stage, report (rebuild report.json from the finished cells "
                         f"without training); got {', '.join(stages)}.")
    return seeds, stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run all five notebooks headless into runs/<timestamp>")
    demo.add_argument("--profile", default="tiny")
    demo.add_argument("--run-id", default=None)
    demo.add_argument("--runs-root", default="runs", help="where run folders go (default: runs/)")
    demo.add_argument("--param", action="append", default=[], metavar="NAME=JSON",
                      help="extra notebook parameter, e.g. --param N_TRAIN=8")
    demo.add_argument("--full-grid", action="store_true",
                      help="run the notebooks' own defaults (04's full sweep: 3 fractions x 3 seeds), not the "
                           "demo's smaller grid")
    demo.add_argument("--publish", default=None, metavar="DEST",
                      help="then copy the run without weights, exports, dataset and notebooks to DEST "
                           "(e.g. data/results/demo_reference)")
    demo.add_argument("--publish-executed", default=None, metavar="DEST",
                      help="then copy the five executed notebooks (outputs and figures) and their timings to DEST "
                           "(docs/executed: what the README and the notebooks link to)")
    one = sub.add_parser("run", help="run notebooks headless, in order, into a run folder (default: runs/latest)")
    one.add_argument("notebook", nargs="+", help="01 .. 05 (or full names); several run in the order given")
    one.add_argument("--run-dir", default=None, help="run folder of the earlier notebooks (default: runs/latest)")
    one.add_argument("--profile", default="tiny")
    one.add_argument("--param", action="append", default=[], metavar="NAME=JSON",
                     help="notebook parameter, e.g. --param SWEEP_SEEDS=3")
    report = sub.add_parser("report", help="print a run's results as Markdown tables")
    report.add_argument("run_dir", nargs="?", default="runs/latest")
    report.add_argument("--verify", action="store_true",
                        help="also recompute every sweep accuracy from its saved predictions (exit 1 on a mismatch)")
    costs = sub.add_parser("costs", help="measure one model's costs in this process (utils.costs.measure_in_subprocess)")
    costs.add_argument("spec", help="a JSON file naming the model and the inputs (see utils.costs.measure_from_spec)")
    costs.add_argument("--out", default=None, help="write the costs here as JSON (default: print them)")
    sub.add_parser("convert", help="convert the bundled GGUF teacher into a cached checkpoint")
    teach = sub.add_parser("teacher", help="run the teacher of a profile on train and test into a cache file")
    teach.add_argument("--profile", default="tiny")
    teach.add_argument("--cache", required=True, help="JSONL cache to append to (resumable)")
    teach.add_argument("--n-train", type=int, default=None)
    teach.add_argument("--n-test", type=int, default=None)
    study = sub.add_parser("study", help="the study on the authors' PaLM rationales (resumable; see utils/studies/)")
    study.add_argument("--paper-data", required=True, help="folder with <task>/ from the authors' datasets.zip")
    study.add_argument("--task", default=None, help="svamp | cqa | esnli | anli1 (default: svamp; --design sizes: esnli)")
    study.add_argument("--profile", default="tiny", help="tiny (CPU, 6-layer student) | paper (GPU, T5 v1.1 base)")
    study.add_argument("--run-dir", default=None, help="default: runs/svamp (--design sizes: runs/esnli)")
    study.add_argument("--stage", action="append", default=None,
                       help="recipe | ablation | final | self_consistency | report (repeatable; default: the "
                            "first three; report alone rewrites report.json and the figure from finished cells; "
                            "with --design sizes only report, which rebuilds the section without training)")
    study.add_argument("--design", default="fractions", choices=("fractions", "cv", "candidates", "sizes", "steps"),
                       help="fractions: the staged study above; cv: k-fold cross-validation over every item "
                            "(standard, dss, ltr; one cell per fold and variant; resumable); candidates: the "
                            "student candidates on fold 0; sizes: e-SNLI data efficiency on a premise-disjoint split, "
                            "epoch-capped; steps: e-SNLI again at matched optimizer steps over 5 seeds")
    study.add_argument("--publish", default=None,
                       help="also copy the run folder here without weights or problem texts (e.g. data/results/NAME); "
                            "--design steps does it after every cell it finishes")
    study.add_argument("--fold", type=int, action="append", default=None,
                       help="with --design cv: run only these folds (repeatable; default: all)")
    study.add_argument("--seed", type=int, action="append", default=None, metavar="N",
                       help="with --design sizes or steps: train these seeds, each one's whole grid before the next "
                            "(repeatable, in the order given; default: sizes 0 1 2, steps 0 1 2 3 4)")
    study.add_argument("--pilot", default=None, metavar="VARIANT@SIZE",
                       help="with --design steps: train one cell (e.g. dss-all4@250, the first --seed or 0) to "
                            "--pilot-steps into <run-dir>/esnli_steps_pilot_<steps>, and print its validation curve; "
                            "sizes a step budget (default run dir: runs/esnli_steps_pilot)")
    study.add_argument("--pilot-steps", type=int, default=640, metavar="N",
                       help="with --pilot: the cell's optimizer steps (a multiple of 40, at least 160; default 640)")
    serve = sub.add_parser("serve", help="serve an exported student over HTTP (POST /predict, GET /docs)")
    serve.add_argument("export_dir", help="a folder written by utils.export.export_student")
    serve.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only; 0.0.0.0: the network")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-inputs", type=int, default=32, help="inputs per request")
    serve.add_argument("--max-chars", type=int, default=2000, help="characters per input")
    serve.add_argument("--max-batch", type=int, default=16, help="inputs per model call")
    serve.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.command == "study" and args.design != "steps" and (args.pilot or args.pilot_steps != 640):
        raise SystemExit("--pilot and --pilot-steps apply to --design steps only.")

    from utils.config import make_run_dir, resolve_run_dir
    from utils.report import render_markdown, verify_predictions, write_report

    if args.command == "demo":
        params = {"PROFILE": args.profile, **({} if args.full_grid else DEMO_PARAMETERS), **parse_params(args.param)}
        check_params(params)
        run_dir = make_run_dir(args.runs_root, args.run_id)
        timings, total = {}, time.perf_counter()
        for name in NOTEBOOKS:
            print(f"== {name} ==", flush=True)
            timings[name] = round(run_notebook(name, run_dir, params), 1)
            write_report(run_dir, "timings", timings)
        timings["total"] = round(time.perf_counter() - total, 1)
        write_report(run_dir, "timings", timings)
        print(render_markdown(run_dir))
        if args.publish:
            from utils.studies.common import publish_study

            publish_study(run_dir, args.publish, skip_dirs=DEMO_PUBLISH_SKIPS)
            print(f"published {run_dir} to {args.publish}")
        if args.publish_executed:
            print(f"published the executed notebooks to {publish_executed(run_dir, args.publish_executed, timings, params)}")
    elif args.command == "run":
        run_dir = resolve_run_dir(args.run_dir)
        params = {"PROFILE": args.profile, **parse_params(args.param)}
        check_params(params)
        for notebook in args.notebook:
            seconds = run_notebook(notebook, run_dir, params)
            name = next(n for n in NOTEBOOKS if n == notebook or n.startswith(notebook))
            report_path = run_dir / "report.json"
            timings = json.loads(report_path.read_text()).get("timings", {}) if report_path.exists() else {}
            timings.pop("total", None)  # no longer one run's wall time
            write_report(run_dir, "timings", {**timings, name: round(seconds, 1)})
            print(f"{name}: {seconds:.1f} s", flush=True)
    elif args.command == "report":
        run_dir = Path(args.run_dir)
        run_dir = (run_dir if run_dir.is_absolute() else Path.cwd() / run_dir).resolve()
        print(render_markdown(run_dir))
        if args.verify:
            problems = verify_predictions(run_dir)
            print("\n".join(problems) if problems else "Every sweep accuracy agrees with its saved predictions.")
            return 1 if problems else 0
    elif args.command == "costs":
        from utils.config import atomic_write_json
        from utils.costs import measure_from_spec

        measured = measure_from_spec(json.loads(Path(args.spec).read_text()))
        if args.out:
            atomic_write_json(args.out, measured)
        else:
            print(json.dumps(measured, indent=2))
    elif args.command == "teacher":
        from utils.config import load_config
        from utils.loaders import select_examples
        from utils.teacher import annotate, summarize_records, teacher_from_config

        overrides = {k: v for k, v in {"n_train": args.n_train, "n_test": args.n_test}.items() if v}
        config = load_config(args.profile, teacher_cache_seed=None, **overrides)
        teacher = teacher_from_config(config)
        for split, n in (("test", config.n_test), ("train", config.n_train)):
            examples = select_examples(config.task, split, n, config.max_ops)
            records = annotate(teacher, config, examples, args.cache, split)
            print(split, summarize_records(records))
    elif args.command == "study" and args.design == "sizes":
        from utils.report import describe_sizes, load_report
        from utils.studies import common, sizes

        seeds, stages = study_sizes_options(args)
        run_dir = resolve_run_dir(args.run_dir or "runs/esnli")
        if stages:  # report only: rebuild the section from the finished cells
            try:
                sizes.esnli_report(args.paper_data, run_dir, seeds)
            except FileNotFoundError as exc:  # no finished cell yet: say so and name the command
                raise SystemExit(str(exc)) from None
        else:
            sizes.esnli_study(args.paper_data, run_dir, args.profile, seeds=seeds)
        if args.publish:
            print(f"published {common.publish_study(run_dir, args.publish)} cells to {args.publish}")
        print(render_markdown(run_dir))
        print(describe_sizes(load_report(run_dir).get(sizes.ESNLI_SECTION)))
    elif args.command == "study" and args.design == "steps":
        from utils.findings import curve_text
        from utils.studies import common, steps

        if args.task not in (None, "esnli") or args.fold:
            raise SystemExit("--design steps is the e-SNLI study: --task and --fold do not apply (omit them).")
        seeds = tuple(args.seed) if args.seed else steps.STEPS_SEEDS
        if args.pilot:
            variant, _, size = args.pilot.partition("@")
            if not size.isdigit():
                raise SystemExit(f"--pilot takes VARIANT@SIZE (e.g. dss-all4@250), got {args.pilot!r}.")
            try:
                run_dir = resolve_run_dir(args.run_dir or "runs/esnli_steps_pilot")
                cell = steps.steps_pilot(args.paper_data, run_dir, variant, int(size), args.pilot_steps,
                                         seed=seeds[0], profile=args.profile)
            except (OSError, ValueError) as exc:
                raise SystemExit(str(exc)) from None
            plateau = cell["plateau"]
            print(f"{variant} on {size} items, seed {cell['seed']}, {args.pilot_steps} optimizer steps: validation "
                  f"{curve_text(cell['validation_curve'])}")
            print(f"best at step {plateau['best_step']}; the last quarter adds {100 * plateau['last_quarter_gain']:+.1f} "
                  f"points: {'plateaued' if plateau['plateaued'] else 'still learning'}; test accuracy "
                  f"{100 * cell['results']['test']['label']['accuracy']:.1f} %")
            if args.publish:
                print(f"published {common.publish_study(run_dir, args.publish)} cells to {args.publish}")
            return 0
        run_dir = resolve_run_dir(args.run_dir or "runs/esnli_steps")
        stages = tuple(dict.fromkeys(args.stage or ()))
        if stages not in ((), ("report",)):
            raise SystemExit(f"--design steps has one stage, report (rebuild the section from the finished cells "
                             f"without training); got {', '.join(stages)}.")
        def publish(cell: dict) -> None:  # after each cell the study trains: its report, published
            if args.publish:
                print(f"published {common.publish_study(run_dir, args.publish)} cells to {args.publish}")

        try:
            if not stages:
                steps.steps_study(args.paper_data, run_dir, args.profile, seeds=seeds, after_cell=publish)
            steps.steps_report(args.paper_data, run_dir, seeds)
        except (OSError, ValueError) as exc:  # no finished cell, another split, steps not matched
            raise SystemExit(str(exc)) from None
        if args.publish:
            print(f"published {common.publish_study(run_dir, args.publish)} cells to {args.publish}")
        print(render_markdown(run_dir))
    elif args.command == "study" and args.design != "fractions":
        from utils.studies.common import publish_study
        from utils.studies.cv import cv_candidates, cv_study

        if args.seed:
            raise SystemExit("--seed applies to --design sizes only.")
        run_dir = resolve_run_dir(args.run_dir or "runs/svamp")
        task = args.task or "svamp"
        if args.design == "cv":
            cv_study(args.paper_data, run_dir, task, args.profile, folds=args.fold)
        else:
            cv_candidates(args.paper_data, run_dir, task, args.profile, fold=(args.fold or [0])[0])
        if args.publish:
            print(f"published {publish_study(run_dir, args.publish)} cells to {args.publish}")
        print(render_markdown(run_dir))
    elif args.command == "study":
        from utils.studies.fractions import paper_study

        if args.seed:
            raise SystemExit("--seed applies to --design sizes only.")
        stages = args.stage or ("recipe", "ablation", "final")
        run_dir = resolve_run_dir(args.run_dir or "runs/svamp")
        paper_study(args.paper_data, run_dir, args.task or "svamp", args.profile, stages)
        print(render_markdown(run_dir))
    elif args.command == "serve":
        from utils.serve import serve as run_service

        run_service(args.export_dir, args.host, args.port, threads=args.threads, max_inputs=args.max_inputs,
                    max_chars=args.max_chars, max_batch=args.max_batch)
    elif args.command == "convert":
        from utils.models import bundled_checkpoint

        print(bundled_checkpoint())
    return 0


if __name__ == "__main__":
    sys.exit(main())
