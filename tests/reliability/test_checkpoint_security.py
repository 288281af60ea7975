"""Checkpoint security: a pickle that would create a file when loaded is refused by every
entry point that reads weights, and the file is never created. Weights also travel as
safetensors (no pickle at all) and come back identical."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from reliability_helpers import TOOLS, assert_clean_failure, observe, run_tool, tiny, train_net

REFUSED = "Refusing to load"


def run_in_process(tool: str, args: list) -> tuple[int, str]:
    """(exit code, stderr) of tools/<tool>.py's main(), which `python tools/<tool>.py` exits
    with; an uncaught exception (a traceback) fails the test. Saves starting Python."""
    spec = importlib.util.spec_from_file_location(f"{tool}_tool", TOOLS / f"{tool}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = module.main([str(a) for a in args])
    return code, err.getvalue()


class CreatesFile:
    """Unpickling this calls os.system("touch <path>"): what a malicious checkpoint does."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.fixture
def evil(tmp_path) -> dict:
    """Hostile weight files, all armed to create tmp_path/pwned when unpickled."""
    marker = tmp_path / "pwned"
    files = {"marker": marker}
    # Prove the payload is real: plain pickle runs it (on a separate control path).
    control = tmp_path / "control_pwned"
    pickle.loads(pickle.dumps(CreatesFile(control)))
    assert control.exists(), "the payload does not work, so the test would prove nothing"
    # torch.save's zip format, the payload inside an ordinary-looking checkpoint dict.
    files["pth"] = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "iteration": 0, "config": CreatesFile(marker)}, files["pth"])
    # A bare pickle stream named .pth (torch's legacy format path).
    files["legacy_pth"] = tmp_path / "evil_legacy.pth"
    files["legacy_pth"].write_bytes(pickle.dumps({"model": CreatesFile(marker)}, protocol=2))
    # A Detectron2-style .pkl: numpy weights plus the payload.
    files["pkl"] = tmp_path / "evil.pkl"
    files["pkl"].write_bytes(pickle.dumps({"model": {"backbone.bottom_up.stem.conv1.weight": np.zeros((2, 3, 7, 7)),
                                                     "evil": CreatesFile(marker)}, "__author__": "x"}))
    return files


def test_train_net_refuses_hostile_weights(evil, generated_shapes, tmp_path):
    out = tmp_path / "out"
    proc = train_net(tiny(generated_shapes, out, "train.max_iter=2", f"model.weights={evil['pth']}"), check=False)
    stderr = assert_clean_failure(proc, REFUSED, str(evil["pth"]), "could run arbitrary code")
    observe("hostile pickle (os.system touch) as train_net.py model.weights=evil.pth", stderr,
            "nothing: exit 1, the file is never created, no output written")
    assert not evil["marker"].exists()
    assert not (out / "checkpoints").exists()


def test_predict_refuses_hostile_weights(evil, tmp_path):
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    for weights in (evil["pth"], evil["legacy_pth"]):
        code, stderr = run_in_process("predict", ["--weights", weights, "--input", image, "--output", tmp_path / "pred"])
        assert code != 0 and REFUSED in stderr and str(weights) in stderr, stderr
    observe("hostile pickle as predict.py --weights (evil.pth zip, then evil_legacy.pth bare pickle; last shown)", stderr,
            f"nothing: exit {code}, the file is never created")
    assert not evil["marker"].exists()
    assert not (tmp_path / "pred" / "predictions.json").exists()


@pytest.mark.parametrize("source,key", [("detectron2", "pkl"), ("torchvision", "pth")])
def test_convert_weights_refuses_hostile_files(source, key, evil, tmp_path):
    out = tmp_path / "converted.pth"
    args = ["--source", source, "--input", evil[key], "--output", out]
    if source == "detectron2":  # a real process: exit code and no traceback as the user sees them
        stderr = assert_clean_failure(run_tool(TOOLS / "convert_weights.py", args), REFUSED, str(evil[key]))
    else:
        code, stderr = run_in_process("convert_weights", args)
        assert code == 1 and REFUSED in stderr and str(evil[key]) in stderr, stderr
    observe(f"hostile pickle as convert_weights.py --source {source} --input evil.{'pkl' if key == 'pkl' else 'pth'}",
            stderr, "nothing: exit 1, the file is never created, no output")
    if source == "detectron2":
        assert "posix.system" in stderr and "nothing in it was run" in stderr
    assert not evil["marker"].exists() and not out.exists()


def test_load_model_refuses_hostile_weights(evil):
    from detector import load_model
    from detector.weights.checkpoint_io import CheckpointError

    for key in ("pth", "legacy_pth"):
        with pytest.raises(CheckpointError, match=REFUSED) as error:
            load_model(evil[key])
        observe(f"hostile pickle ({'torch.save zip' if key == 'pth' else 'bare pickle stream'}) to detector.load_model",
                f"CheckpointError: {error.value}", "nothing: the file is never created")
    assert not evil["marker"].exists()


def test_weights_round_trip_through_safetensors(tmp_path):
    """Export a checkpoint with the CLI, import it back with the Python API: same tensors,
    same config, same detections -- and the exported file holds no pickle."""
    from detector import build_model, load_config, load_model
    from detector.weights.checkpoint_io import load_checkpoint, save_checkpoint
    from omegaconf import OmegaConf
    from detector.weights.conversion.convert import convert_weights

    cfg = load_config(tiny(tmp_path / "unused", tmp_path / "out")[1:] + ["model.num_classes=3",
                                                                         "model.class_names=[a,b,c]"])
    torch.manual_seed(0)
    model = build_model(cfg)
    original = tmp_path / "model_final.pth"
    save_checkpoint({"model": model.state_dict(), "iteration": 7, "config": OmegaConf.to_container(cfg, resolve=True),
                     "category_ids": [5, 9, 11]}, original)

    exported = tmp_path / "model.safetensors"
    code, stderr = run_in_process("convert_weights", ["--source", "checkpoint", "--input", original, "--output", exported])
    assert code == 0, stderr
    header_len = struct.unpack("<Q", exported.read_bytes()[:8])[0]
    assert exported.read_bytes()[8:9] == b"{" and header_len < exported.stat().st_size  # JSON header, raw tensors

    imported = convert_weights("checkpoint", exported, tmp_path / "back.pth")
    a, b = load_checkpoint(original), load_checkpoint(imported)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["config"] == a["config"] and b["iteration"] == 7 and b["category_ids"] == [5, 9, 11]

    image = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(1))
    outputs = [load_model(path, ["model.roi_heads.score_thresh=0.0"])([image])[0] for path in (original, exported)]
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(outputs[0][key], outputs[1][key])
    observe("export to safetensors and import back (convert_weights.py --source checkpoint)", f"exit {code}; wrote {exported}",
            "nothing: every tensor, the config, iteration and category ids identical; same detections")
