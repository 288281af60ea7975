"""Both training commands go through one launch (detector/engine/launch.py): a Task's own
config check refuses a config the same way in detector-train and detector-train-cls -- one
`error: ...` line, exit code 1, nothing created -- and the failures a user can fix get that
answer from either command, whatever the task."""
from __future__ import annotations

import sys

import pytest

from detector.cli import train_cls, train_net
from detector.engine.config_checks import ConfigError
from detector.tasks.classification import ClassificationTask
from detector.tasks.detection import DetectionTask

COMMANDS = {"train_net": (train_net, DetectionTask), "train_cls": (train_cls, ClassificationTask)}


def refuse_with(error: Exception):
    def check_config(self, cfg):
        raise error
    return check_config


def run_never_starts():
    raise AssertionError("the run started: the task's check did not stop it")


def launch_refused(name: str, error: Exception, out, monkeypatch, capsys) -> tuple[int, str]:
    """Run the command `name` in-process with a task whose check raises `error`; its exit
    code and stderr. Should the check be skipped, the run fails at once instead of training."""
    import detector.engine.context

    module, task = COMMANDS[name]
    monkeypatch.setattr(task, "check_config", refuse_with(error))
    monkeypatch.setattr(detector.engine.context, "open_run_context", lambda cfg: run_never_starts())
    monkeypatch.setattr(sys, "argv", [name, f"output_dir={out}", "data.root=/unused"] if name == "train_cls"
                        else [name, f"output_dir={out}"])
    with pytest.raises(SystemExit) as stop:
        module.run()
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_task_that_refuses_its_config_stops_either_command_before_any_work(name, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, err = launch_refused(name, ConfigError("my.key=3 cannot work: use 4."), out, monkeypatch, capsys)
    assert (code, err) == (1, "error: my.key=3 cannot work: use 4.\n")
    assert not out.exists()   # refused before the output folder, the data or a process group


@pytest.mark.parametrize("error", [
    "detector.data.DatasetError", "detector.weights.state_dicts.WeightsMismatchError",
    "detector.engine.trainer.NonFiniteLossError",
])
def test_both_commands_give_the_same_answer_to_the_same_failure(error, tmp_path, monkeypatch, capsys):
    """The two commands used to catch different errors (a DatasetError gave train_cls a
    traceback, a WeightsMismatchError gave train_net one)."""
    import importlib

    module, name = error.rsplit(".", 1)
    kind = getattr(importlib.import_module(module), name)
    answers = {command: launch_refused(command, kind("the reason, and what to do"), tmp_path / command, monkeypatch,
                                       capsys)
               for command in COMMANDS}
    assert answers["train_net"] == answers["train_cls"] == (1, "error: the reason, and what to do\n")


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """Only the failures a user can fix are shortened to one line; anything else reaches Hydra,
    which prints its traceback."""
    monkeypatch.setattr(DetectionTask, "check_config", refuse_with(KeyError("a bug")))
    monkeypatch.setattr(sys, "argv", ["train_net", f"output_dir={tmp_path}"])
    with pytest.raises(SystemExit):
        train_net.run()
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'a bug'" in err and "error: " not in err
