"""benchmarks/trainer_throughput.py: its table on constructed runs (no training), bf16 rows included,
and the lever comparison's rows and sentence."""

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("trainer_throughput")


def _run(precision: str, tokens_per_second: float, flops_per_second: float) -> dict:
    """One run's result, with the fields the table reads (``run_variant`` returns more)."""
    return {"tokens_per_second": tokens_per_second, "real_tokens_per_second": 4 * tokens_per_second,
            "flops_per_second": flops_per_second, "seconds_per_step": 1.5, "parameters": 53_000_000,
            "precision": precision, "peak_rss_mib": 1800.0, "peak_cuda_mib": None}


def _mfu(line: str) -> str:
    return [cell.strip() for cell in line.split("|")][9]


def test_a_bf16_row_is_held_against_the_bf16_peak(benchmark):
    runs = {("causal", "paper"): [_run("fp32", 100, 20e9)], ("causal", "ours"): [_run("bf16 autocast", 300, 60e9)]}
    lines = benchmark.table_lines(runs, {"fp32": 100.0, "bf16": 400.0}, {"causal": "causal"})
    assert len(lines) == 4
    paper, ours = lines[2], lines[3]
    assert _mfu(paper) == "20.0" and _mfu(ours) == "15.0"  # 20 of 100 GFLOP/s; 60 of 400 GFLOP/s
    assert "| 3.00x |" in ours and "| 1.00x |" in paper


def test_a_row_without_its_peak_says_so_instead_of_failing(benchmark):
    runs = {("causal", "ours"): [_run("bf16 autocast", 300, 60e9)]}
    line = benchmark.table_lines(runs, {"fp32": 100.0}, {"causal": "causal"})[2]
    assert _mfu(line) == "n/a (no bf16 peak)" and "| n/a |" in line  # no paper row: no speed-up either


def test_every_precision_a_run_reports_names_a_measurable_peak(benchmark):
    for precision, dtype in benchmark.PRECISION_DTYPES.items():
        assert benchmark.peak_dtype({"precision": precision}) == dtype
    assert "fp32" in benchmark.expected_dtypes()


def test_levers_rows_turn_every_lever_off_then_on(benchmark):
    for family, rows in benchmark.LEVER_VARIANTS.items():
        (off, off_impl, off_set, off_pruned), (on, on_impl, on_set, on_pruned) = rows
        assert (off, on) == ("levers-off", "levers-on") and off_impl == on_impl == "ours"
        assert not off_pruned and on_pruned
        assert off_set == {"pack_rows": False, "prune_vocab": False, "flush_denormal": False, "bf16": False}
        assert on_set == {"pack_rows": True, "prune_vocab": True, "flush_denormal": True, "bf16": None}
        assert (family, off) in benchmark.NAMES and (family, on) in benchmark.NAMES
    spec = {"family": "causal", "batch_size": 16, "bf16": False, "set": benchmark.LEVERS_OFF}
    config = benchmark.variant_config(spec)
    assert config.bf16 is False and not config.pack_rows and not config.flush_denormal
    assert benchmark.variant_config({**spec, "set": benchmark.LEVERS_ON}).bf16 is None  # bf16 where it is fast


def test_the_lever_sentence_gives_the_ratio_of_medians_and_run_by_run(benchmark):
    runs = {("causal", "levers-off"): [_run("fp32", 100, 1e9), _run("fp32", 120, 1e9)],
            ("causal", "levers-on"): [_run("bf16 autocast", 250, 1e9), _run("bf16 autocast", 240, 1e9)]}
    line = benchmark.speedup_line(runs, "causal", "levers-off", "levers-on", "causal")
    assert line == "causal: levers-on against levers-off 2.23x (run by run 2.50x, 2.00x)."
    lines = benchmark.table_lines(runs, {"fp32": 100.0, "bf16": 400.0}, {"causal": "causal"}, baseline="levers-off")
    assert "| 2.23x |" in lines[3]
    paper = {("causal", "paper"): runs[("causal", "levers-off")], ("causal", "ours"): runs[("causal", "levers-on")]}
    goal = benchmark.speedup_line(paper, "causal", "paper", "ours", "causal", goal=1.5)
    assert goal == "causal: ours against the paper's loop 2.23x (run by run 2.50x, 2.00x); goal >= 1.5x: met."
