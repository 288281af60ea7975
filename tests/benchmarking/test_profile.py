"""The profile section's operator table (detector/benchmarking/profile.py): self times per run
whose shares add up to one, the heaviest operator first, the rest as "other"; and its printed
form. On a small known workload (a matmul much heavier than an add): milliseconds."""
from __future__ import annotations

import pytest
import torch


def test_operator_shares_rank_the_heaviest_operator_first():
    from detector.benchmarking.profile import operator_shares

    a, b = torch.rand(256, 256), torch.rand(256, 256)
    small = torch.rand(8)

    def run():
        for _ in range(4):
            torch.mm(a, b)
        return small + 1

    shares = operator_shares(run, runs=3, warmup=1, top=1)
    ops = shares["ops"]
    assert ops[0]["op"] == "aten::mm" and ops[0]["calls_per_run"] == pytest.approx(4)
    assert ops[-1]["op"] == "other" and len(ops) == 2
    assert sum(op["share"] for op in ops) == pytest.approx(1.0)
    assert ops[0]["share"] > ops[-1]["share"] and shares["ms_per_run"] > 0


def test_format_profile_prints_every_part_and_the_before_after_rows():
    from detector.benchmarking.profile import format_profile

    op = {"op": "aten::mm", "ms_per_run": 12.0, "share": 0.75, "calls_per_run": 4}
    other = {"op": "other", "ms_per_run": 4.0, "share": 0.25, "calls_per_run": 9}
    part = {"wall_ms_per_run": 17.0, "ms_per_run": 16.0, "ops": [op, other]}
    report = {"size": [800, 1333], "image": [480, 640], "threads": 2, "runs": 2, "native_bf16": False,
              "parts": {"inference fp32": part, "training step fp32": part}, "timed_images": [[480, 640]],
              "before_after": {"ours fp32, weights kept (after)": {"ms_median": 10.0, "ratio_to_torchvision_fp32": 0.6}}}
    text = "\n".join(format_profile(report))
    assert "bf16 not profiled: this CPU has no native bf16" in text
    assert "inference fp32: 17 ms per run" in text and "training step fp32" in text
    assert "aten::mm" in text and "75.0 %" in text and "0.600x of torchvision fp32" in text
