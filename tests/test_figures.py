"""utils.figures: the pipeline figure (README, notebook 01), the loss against alpha, the token table."""

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from utils.figures import PIPELINE, plot_loss_against_alpha, plot_pipeline, token_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_pipeline_writes_a_png_of_the_five_stages(tmp_path):
    out = tmp_path / "figures" / "pipeline.png"
    fig = plot_pipeline(out)
    assert is_png(out) and out.stat().st_size > 10_000
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"Teacher", "Rationales", "Student", "Evaluation", "Deploy"} <= texts
    assert [row[1] for row in PIPELINE] == ["01_teacher_cot", "02_rationale_dataset", "03_multitask_student",
                                            "04_eval_vs_teacher", "05_deploy"]


def test_the_committed_pipeline_figure_exists_and_opens_the_readme():
    assert is_png(REPO / "data" / "figures" / "pipeline.png")
    readme = (REPO / "README.md").read_text()
    assert readme.index("data/figures/pipeline.png") < readme.index("## Two commands")


def test_plot_loss_against_alpha_writes_a_png(tmp_path):
    out = tmp_path / "alpha.png"
    plot_loss_against_alpha([0.0, 0.5, 1.0], [2.0, 1.5, 1.0], 1.0, 2.0, out)
    assert is_png(out)


class Tokens:
    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


def test_token_table_marks_learned_tokens_and_cuts_padding():
    batch = {"input_ids": torch.tensor([[5, 6, 7, 0, 0, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0, 0, 0, 0]]),
             "labels": torch.tensor([[-100, -100, 7, -100, -100, -100, -100]])}
    table = token_table(batch, Tokens(), 0, "causal", max_padding=2)
    assert len(table) == 5  # three real tokens and two of the four padding tokens
    assert table["learned"].tolist() == [False, False, True, False, False]
    seq2seq = {"input_ids": torch.tensor([[5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 0]]),
               "labels": torch.tensor([[8, 9, -100]])}
    table = token_table(seq2seq, Tokens(), 0, "seq2seq")
    assert table["side"].tolist() == ["encoder"] * 3 + ["decoder target"] * 2
    assert table["learned"].tolist() == [False, False, False, True, True]
