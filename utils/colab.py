"""A notebook opened alone, as Colab opens it: the repository its badge and setup cell name, and
running the notebooks before it, saying what and how long first.

``COURSE_REPO`` is the one place that names the course's GitHub repository. Every notebook's
*Open in Colab* badge and the ``git clone`` of its setup cell are written from it (the clone runs
before the package exists, so the URL has to be spelled out in each notebook):
``python -m utils.colab --repo you/your-fork`` sets the constant and rewrites them all, and
``tests/test_colab.py`` fails when one disagrees.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# owner/name on GitHub. The course is meant to live here; until it is published there, point it at the
# repository you pushed it to (python -m utils.colab --repo you/name).
COURSE_REPO = "distilling-step-by-step/course"
BRANCH = "main"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
# The demo's measured seconds per notebook, written by `python -m utils demo --publish-executed docs/executed`.
DEMO_TIMINGS = REPO_ROOT / "docs" / "executed" / "timings.json"


def repo_url(repo: str = COURSE_REPO) -> str:
    """The clone URL of ``repo`` (``owner/name``)."""
    return f"https://github.com/{repo}"


def colab_url(notebook: str, repo: str = COURSE_REPO, branch: str = BRANCH) -> str:
    """The Colab address that opens ``notebook`` (a path in the repository) from GitHub."""
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/{notebook}"


def badge(notebook: str, repo: str = COURSE_REPO) -> str:
    """The *Open in Colab* badge of ``notebook``, as Markdown."""
    return f"[![Open In Colab]({COLAB_BADGE})]({colab_url(notebook, repo)})"


_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")
_CLONE = re.compile(r'REPO_URL = "https://github\.com/[^"]*"')


def notebooks() -> list[Path]:
    """Every notebook with a badge and a setup cell: the five and the solutions."""
    return sorted((REPO_ROOT / "notebooks").glob("*.ipynb")) + sorted((REPO_ROOT / "notebooks" / "solutions").glob("*.ipynb"))


def point_notebooks_at(repo: str = COURSE_REPO) -> list[Path]:
    """Rewrite every notebook's badge and clone URL to ``repo``; returns the notebooks changed."""
    import nbformat

    changed = []
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        name = path.relative_to(REPO_ROOT).as_posix()
        before = [cell.source for cell in nb.cells]
        new_badge, new_clone = badge(name, repo), f'REPO_URL = "{repo_url(repo)}"'
        for cell in nb.cells:
            cell.source = _BADGE.sub(lambda m, text=new_badge: text, cell.source)
            cell.source = _CLONE.sub(lambda m, text=new_clone: text, cell.source)
        if [cell.source for cell in nb.cells] != before:
            path.write_text(nbformat.writes(nb) + "\n")
            changed.append(path)
    return changed


def set_course_repo(repo: str) -> None:
    """Make ``repo`` the constant of this module (its source line) and rewrite the notebooks."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise SystemExit(f"--repo {repo!r}: expected owner/name, e.g. you/distilling-step-by-step")
    source = Path(__file__)
    source.write_text(re.sub(r'^COURSE_REPO = "[^"]*"', f'COURSE_REPO = "{repo}"', source.read_text(), flags=re.M))
    for path in point_notebooks_at(repo):
        print(f"rewrote {path.relative_to(REPO_ROOT)}")


# --- RUN_EARLIER ---------------------------------------------------------------------------------------


def missing_notebooks(run_dir: str | Path, stage: str) -> list[str]:
    """The notebooks that must run before ``stage``'s outputs are all in ``run_dir`` (in order)."""
    from utils.config import STAGES, stage_done

    needed = list(STAGES)[: list(STAGES).index(stage) + 1]
    first = next((s for s in needed if not stage_done(run_dir, s)), None)
    return [] if first is None else [STAGES[s][0] for s in needed[needed.index(first):]]


def earlier_plan(todo: list[str], timings_path: str | Path = DEMO_TIMINGS) -> str:
    """What RUN_EARLIER is about to run and how long the published demo run took for it."""
    from utils.__main__ import DEMO_PARAMETERS

    grid = ", ".join(f"{k} = {v}" for k, v in DEMO_PARAMETERS.items())
    text = (f"RUN_EARLIER: running {', '.join(todo)} headless first, with make demo's parameters ({grid}; "
            f"they apply to the notebooks that declare them).")
    path = Path(timings_path)
    if path.exists():
        measured = json.loads(path.read_text())
        seconds = sum(measured["seconds"].get(n, 0) for n in todo)
        machine = measured["machine"]
        text += (f" The published demo run took {seconds / 60:.1f} min for them on {machine['processor']} "
                 f"({machine['cores']} cores, bf16 {'on' if machine['bf16'] else 'off'}, GPU: "
                 f"{machine.get('gpu') or 'none'}); a CPU without bf16 takes longer, a GPU less.")
    return text


def demo_grid_runner(notebook: str, run_dir: Path, profile: str | None) -> None:
    """Run ``notebook`` headless into ``run_dir`` with the demo's parameters (``python -m utils run``)."""
    from utils.__main__ import DEMO_PARAMETERS
    from utils.config import stage_command

    params = [arg for k, v in DEMO_PARAMETERS.items() for arg in ("--param", f"{k}={json.dumps(v)}")]
    subprocess.run(stage_command(notebook, run_dir, profile) + params, cwd=REPO_ROOT, check=True)


def require_earlier(run_dir: str | Path, stage: str, run_missing: bool = False, profile: str | None = None) -> list[str]:
    """``utils.config.require_stage`` for a notebook's first cell: without ``run_missing`` a missing
    stage is one error naming the command; with it, the plan and its measured time are printed,
    then the missing notebooks run with the demo's parameters. Returns the notebooks that ran."""
    from utils.config import require_stage

    todo = missing_notebooks(run_dir, stage)
    if todo and run_missing:
        print(earlier_plan(todo), flush=True)
    return require_stage(run_dir, stage, run_missing=run_missing, profile=profile, runner=demo_grid_runner)


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.colab [--repo owner/name]``: point the badges and clone cells at a repository."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m utils.colab", description=main.__doc__)
    parser.add_argument("--repo", default=None, help=f"owner/name on GitHub (now: {COURSE_REPO})")
    args = parser.parse_args(argv)
    if args.repo:
        set_course_repo(args.repo)
    else:
        for path in point_notebooks_at():
            print(f"rewrote {path.relative_to(REPO_ROOT)}")
    print(f"badges and clone cells point at {repo_url(args.repo or COURSE_REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
