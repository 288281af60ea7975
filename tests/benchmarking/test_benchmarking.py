"""The measuring pieces of tools/benchmark.py: they must measure what they claim."""
import json

import torch

from detector.benchmarking.detections import agreement
from detector.benchmarking.memory import peak_memory_bytes
from detector.benchmarking.pipeline import evaluation_time
from detector.benchmarking.timing import interleaved_times, ratio

CPU = torch.device("cpu")


def test_peak_memory_follows_allocations_and_frees():
    def run():
        a = torch.ones(1000, 1000)          # 4 MB
        b = a * 2                           # 8 MB held
        del a                               # 4 MB
        c = torch.ones(2000, 1000)          # 12 MB: the peak
        return float(b.sum() + c.sum())

    assert abs(peak_memory_bytes(run, CPU) - 12_000_000) < 1000


def test_candidates_alternate_and_warmup_is_not_timed():
    calls = []
    times = interleaved_times({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))},
                              repeats=3, warmup=2, device=CPU)
    assert calls == [(name, i) for i in range(5) for name in ("a", "b")]
    assert len(times["a"]) == len(times["b"]) == 3
    assert ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0]) == 3.0   # median of per-round ratios 2, 4, 3


def test_agreement_matches_same_label_boxes_and_measures_differences():
    boxes = torch.tensor([[0.0, 0, 100, 100], [200, 200, 300, 260], [10, 10, 50, 50]])
    theirs = {"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 2, 3])}
    ours = {"boxes": boxes + torch.tensor([[0.0, 0, 0.25, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
            "scores": torch.tensor([0.9, 0.8005, 0.7]), "labels": torch.tensor([1, 2, 4])}
    result = agreement(theirs, ours)
    assert result["matched"] == 2 and result["top20_matched"] == 2        # the relabelled box is not a match
    assert abs(result["max_box_diff_px"] - 0.25) < 1e-6
    assert abs(result["max_score_diff"] - 0.0005) < 1e-6


def test_evaluation_timing_reproduces_the_official_numbers(coco_eval_reference):
    gt = json.loads((coco_eval_reference / "instances_val2014_100.json").read_text())
    results = json.loads((coco_eval_reference / "instances_val2014_fakebbox100_results.json").read_text())
    report = evaluation_time(gt, results, repeats=1, device=CPU)
    assert abs(report["AP"] - 0.5045806987249628) < 1e-9
    assert report["max_stat_diff"] < 1e-12 and report["detections"] == len(results)
    assert report["ours"]["n"] == report["pycocotools"]["n"] == 1


def test_bf16_is_timed_only_where_the_device_runs_it_natively(monkeypatch):
    """Emulated bf16 (a CPU without AVX512-BF16/AMX) took most of the benchmark's time and measures
    nothing a user would run; auto skips it there, says so in the table, and --bf16 on still times it."""
    from detector.benchmarking import suite

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(suite, "cpu_has_native_bf16", lambda: False)
    assert not suite.bf16_timed(suite.Options(), cpu)
    assert suite.bf16_timed(suite.Options(), cuda)
    assert suite.bf16_timed(suite.Options(bf16="on"), cpu)
    assert not suite.bf16_timed(suite.Options(bf16="off"), cuda)
    table = suite.format_table({"machine": {}, "bf16_timed": False})
    assert "bf16 not timed" in table
    monkeypatch.setattr(suite, "cpu_has_native_bf16", lambda: True)
    assert suite.bf16_timed(suite.Options(), cpu)
    assert "bf16 not timed" not in suite.format_table({"machine": {}, "bf16_timed": True})
