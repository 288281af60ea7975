"""tools/bench_heads.py's measuring pieces (the benchmark itself trains for minutes and is not run
here): side-by-side runs get their own end times, a failed run stops the pair and names its log."""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_heads.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_heads", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sleeper(seconds: float, code: int = 0) -> list[str]:
    return [sys.executable, "-c", f"import time, sys; time.sleep({seconds}); sys.exit({code})"]


def spinner(seconds: float) -> list[str]:
    return [sys.executable, "-c", f"import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass"]


def test_each_run_gets_its_own_wall_and_cpu_time(bench, tmp_path):
    # The long run is listed first: waiting on it in order would give the short one its time.
    seconds = bench.run_side_by_side({"long": (sleeper(2.0), tmp_path / "long"),
                                      "short": (sleeper(0.1), tmp_path / "short"),
                                      "busy": (spinner(1.0), tmp_path / "busy")})
    assert seconds["long"][0] >= 2.0
    assert seconds["short"][0] < seconds["long"][0] - 1.0
    assert seconds["long"][1] < 0.5 and seconds["busy"][1] >= 0.8   # sleeping costs no CPU; spinning does
    assert (tmp_path / "long.log").exists() and (tmp_path / "short.log").exists()


def test_a_failed_run_names_its_log_and_stops_the_other(bench, tmp_path):
    began = time.perf_counter()
    with pytest.raises(SystemExit, match=r"broken failed \(exit 3\).*broken\.log"):
        bench.run_side_by_side({"slow": (sleeper(30.0), tmp_path / "slow"),
                                "broken": (sleeper(0.1, code=3), tmp_path / "broken")})
    assert time.perf_counter() - began < 10  # the 30 s run was killed, not waited for


def test_scores_show_segm_only_when_present(bench):
    block = {"AP": 0.5, "AP50": 0.75, "AP75": 0.25}
    assert bench.scores({"bbox": block}) == "bbox 0.5000 / 0.7500 / 0.2500"
    assert bench.scores({"bbox": block, "segm": block}).endswith("segm 0.5000 / 0.7500 / 0.2500")


def test_scores_show_small_object_ap_where_the_block_has_it(bench):
    bbox = {"AP": 0.5, "AP50": 0.75, "AP75": 0.25, "APs": 0.125}
    keypoints = {"AP": 0.5, "AP50": 0.75, "AP75": 0.25}   # no small area for keypoints
    assert bench.scores({"bbox": bbox, "keypoints": keypoints}) == \
        "bbox 0.5000 / 0.7500 / 0.2500 / 0.1250   keypoints 0.5000 / 0.7500 / 0.2500"


def test_several_heads_share_one_baseline_run(bench, tmp_path):
    args = bench.parse_args(["--model", "retinanet_fpn", "--model", "fcos_fpn", "--baseline-iters", "900",
                             "--model-override", "model.x=1", "train.amp=none"])
    commands = bench.training_commands(args, args.model, 7, tmp_path)
    assert list(commands) == ["faster_rcnn_fpn", "retinanet_fpn", "fcos_fpn"]
    baseline, _ = commands["faster_rcnn_fpn"]
    assert "train.max_iter=900" in baseline and "model.x=1" not in baseline
    for head in ("retinanet_fpn", "fcos_fpn"):
        cmd, out = commands[head]
        assert out == tmp_path / head and f"model={head}" in cmd and "model.x=1" in cmd
        assert not any(arg.startswith("train.max_iter") for arg in cmd)   # the head keeps its recipe's length
    assert all("seed=7" in cmd and "train.amp=none" in cmd for cmd, _ in commands.values())
