"""The course's task accuracy as a Hugging Face `evaluate` metric script (one config per task).

Load it with `utils.metrics.load_metric(task)`, or `evaluate.load("utils/metric_task_accuracy.py",
config_name=task)`: a local script needs no hub access. Each item is scored by
`utils.metrics.task_correct` (equation value for arith and svamp, normalised label for cqa, esnli
and anli1). An answer that could not be read is passed as the empty string, which is always wrong
(`evaluate` refuses None in a string column).
"""

import datasets
import evaluate

from utils.tasks import ALL_TASK_NAMES, get_task, task_correct

_CITATION = """\
@article{hsieh2023distilling,
  title={Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data and Smaller Model Sizes},
  author={Hsieh, Cheng-Yu and Li, Chun-Liang and Yeh, Chih-Kuan and Nakhost, Hootan and Fujii, Yasuhisa and
          Ratner, Alexander and Krishna, Ranjay and Lee, Chen-Yu and Pfister, Tomas},
  journal={arXiv preprint arXiv:2305.02301},
  year={2023}
}
"""

_DESCRIPTION = (
    "Accuracy of answers to one of the course's tasks, and the per-item correctness. The config name is "
    f"the task ({', '.join(ALL_TASK_NAMES)})."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the answers, e.g. "( 84 / 2 )", "42" or "(b) bank"; "" for none.
    references (list of str): the gold labels.
Returns:
    accuracy (float): the share of correct predictions.
    correct (list of bool): whether each prediction is correct.
Example:
    >>> metric = evaluate.load("utils/metric_task_accuracy.py", config_name="svamp")
    >>> metric.compute(predictions=["42", ""], references=["( 84.0 / 2.0 )", "( 3 + 4 )"])
    {'accuracy': 0.5, 'correct': [True, False]}
"""


class TaskAccuracy(evaluate.Metric):
    """`task_correct` for every item, and their mean."""

    def _info(self) -> evaluate.MetricInfo:
        get_task(self.config_name)  # a config that is not a task fails here, listing the tasks
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list, references: list) -> dict:
        task = get_task(self.config_name)  # once, not per item
        correct = [task_correct(task, p, g) for p, g in zip(predictions, references, strict=True)]
        return {"accuracy": sum(correct) / len(correct) if correct else 0.0, "correct": correct}
