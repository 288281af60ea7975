"""The best-checkpoint and early-stopping decisions, in process (no training), and the
metrics.jsonl history file's resume rule."""
from __future__ import annotations

import json

import pytest

from detector.engine.best_checkpoint import BEST, BestCheckpointHook
from detector.engine.history import MetricsHistory, eval_record, flatten_record, nest_scalars


class RecordingCheckpointer:
    def __init__(self):
        self.saved: list[tuple[str, int]] = []

    def save(self, name, iteration, final=False, extra=None):
        self.saved.append((name, iteration))


def observe_all(hook: BestCheckpointHook, values: list) -> list[int]:
    stopped = []
    for n, value in enumerate(values, start=1):
        hook.observe(10 * n, {"bbox/AP": value, "bbox/AP50": 0.5})
        if hook.stopped_at is not None:
            stopped.append(hook.stopped_at)
            break
    return stopped


def test_best_is_saved_on_strict_improvement_only_and_patience_stops():
    saver = RecordingCheckpointer()
    hook = BestCheckpointHook(None, saver, "bbox/AP", "max", patience=2)
    assert observe_all(hook, [0.1, 0.3, 0.3, 0.2, 0.9]) == [40]  # 0.3 at 30 is no improvement, nor 0.2 at 40
    assert saver.saved == [(BEST, 10), (BEST, 20)]
    assert (hook.best_value, hook.best_iteration) == (0.3, 20)


def test_min_mode_and_undefined_values():
    saver = RecordingCheckpointer()
    hook = BestCheckpointHook(None, saver, "bbox/AP", "min", patience=0)
    observe_all(hook, [None, 0.5, 0.7, 0.2])
    assert saver.saved == [(BEST, 20), (BEST, 40)] and hook.stopped_at is None  # patience 0: never stops


def test_state_round_trip_continues_the_count():
    first = BestCheckpointHook(None, RecordingCheckpointer(), "bbox/AP", "max", patience=3)
    observe_all(first, [0.4, 0.3])
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint carries
    resumed = BestCheckpointHook(None, RecordingCheckpointer(), "bbox/AP", "max", patience=3)
    resumed.load_state_dict(state)
    resumed.observe(30, {"bbox/AP": 0.35})
    resumed.observe(40, {"bbox/AP": 0.1})
    assert resumed.stopped_at == 40 and resumed.best_iteration == 10
    other = BestCheckpointHook(None, RecordingCheckpointer(), "bbox/AP50", "max")
    other.load_state_dict(state)  # another metric: starts over
    assert other.best_value is None


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="train.best_mode='maximum'"):
        BestCheckpointHook(None, RecordingCheckpointer(), "bbox/AP", "maximum")
    with pytest.raises(ValueError, match="train.best_metric='AP'"):
        BestCheckpointHook(None, RecordingCheckpointer(), "AP", "max")
    hook = BestCheckpointHook(None, RecordingCheckpointer(), "bbox/AP_typo", "max")
    with pytest.raises(ValueError, match="available: \\['bbox/AP', 'bbox/AP50'\\]"):
        hook.observe(10, {"bbox/AP": 0.1, "bbox/AP50": 0.2})


def test_history_resume_drops_lines_past_the_checkpoint(tmp_path):
    history = MetricsHistory(tmp_path)
    history.append([{"iteration": i, "type": "train", "total_loss": 1.0 / i} for i in (2, 4, 6)]
                   + [eval_record(4, {"bbox/AP": 0.2, "bbox/APl": None, "bbox_per_category/cat": 0.1})])
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"iteration": 8, "type": "tra')  # a line cut by a kill
    assert history.start(4) == 1  # the iteration-6 line (the cut one is not a record)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [2, 4, 4]
    assert json.loads(lines[-1])["bbox"] == {"AP": 0.2, "APl": None, "per_category": {"cat": 0.1}}
    assert (tmp_path / "results.csv").read_text().splitlines() == [
        "iteration,bbox/AP,bbox/APl,bbox_per_category/cat", "4,0.2,,0.1"]
    assert history.start(0) == 3 and (tmp_path / "metrics.jsonl").read_text() == ""  # a fresh run starts empty


def test_nest_and_flatten_are_inverse():
    flat = {"bbox/AP": 0.1, "bbox_per_category/a b": 0.2, "time/evaluation": 3.0}
    nested = nest_scalars(flat)
    assert nested == {"bbox": {"AP": 0.1, "per_category": {"a b": 0.2}}, "time": {"evaluation": 3.0}}
    assert flatten_record(nested) == flat
