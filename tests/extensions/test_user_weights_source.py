"""A user's own weights source (user_plugins/toy_weights.py: one module, one register_source call),
with no edit inside detector/: converted through the Python entry point, through
tools/convert_weights.py --source toy (the module declared under the entry-point group
detector.weights_sources, as a package of yours would be), and by its published name
toy://tiny; each converted checkpoint loads with load_model and gives the original model's
detections."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detector import build_model, load_config, load_model
from detector.weights.conversion.convert import convert_weights

PLUGINS_ROOT = Path(__file__).resolve().parent   # holds the user_plugins package
REPO = PLUGINS_ROOT.parents[1]
# At test time the images stay small (the model's default resize is to 800 pixels).
AT_TEST = ["model.roi_heads.score_thresh=0.0", "model.input.min_size_test=96", "model.input.max_size_test=128"]
OVERRIDES = ["schedule=1x", "backbone=resnet18", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64",
             "model.num_classes=3", *AT_TEST]


@pytest.fixture(scope="module")
def original():
    torch.manual_seed(0)
    return build_model(load_config(OVERRIDES)).eval()


def write_toy_file(model, path: Path) -> Path:
    """The toy publisher's layout: this project's names with "/" for ".", under "toy/"."""
    torch.save({"toy/" + key.replace(".", "/"): value for key, value in model.state_dict().items()}, path)
    return path


def same_detections(model, original) -> None:
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model([image])[0], original([image])[0]
    assert len(theirs["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(ours[key], theirs[key]), key


def test_the_python_entry_point_converts_a_registered_users_source(original, tmp_path):
    import user_plugins.toy_weights  # noqa: F401 - its register_source call is what adds --source toy

    output = convert_weights("toy", write_toy_file(original, tmp_path / "model.toy"), tmp_path / "converted.pth")
    model = load_model(output, AT_TEST)
    assert model.config.backbone.name == "resnet18" and model.num_classes == 3
    assert model.config.model.fpn.out_channels == 32 and model.config.model.roi_heads.fc_dim == 64
    same_detections(model, original)
    with pytest.raises(ValueError, match=r"weights\.pth' is not a toy \.toy file; it looks like a file of --source "):
        convert_weights("toy", output.rename(tmp_path / "weights.pth"), tmp_path / "again.pth")


def test_the_command_line_offers_an_installed_source(original, tmp_path):
    """A package that declares its module under the entry-point group detector.weights_sources (here a
    .dist-info folder on PYTHONPATH, what `pip install` writes) adds its --source choice."""
    site = tmp_path / "site"
    dist_info = site / "toy_weights-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-weights\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[detector.weights_sources]\ntoy = user_plugins.toy_weights\n")
    path = os.pathsep.join(p for p in (str(site), str(PLUGINS_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    toy = write_toy_file(original, tmp_path / "model.toy")
    output = tmp_path / "converted.safetensors"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert_weights.py"), "--source", "toy",
                           "--input", str(toy), "--output", str(output)],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {output}" in proc.stdout
    same_detections(load_model(output, AT_TEST), original)


def test_a_published_name_of_the_users_source_is_fetched_converted_and_loaded(original, tmp_path, monkeypatch):
    """toy://tiny goes through the published-names cache like torchvision://...: the publisher's
    file in TORCH_HOME's cache (planted here: tests do not download), converted once, loaded."""
    import user_plugins.toy_weights  # noqa: F401

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    write_toy_file(original, cache / "tiny.toy")
    same_detections(load_model("toy://tiny", AT_TEST), original)
    assert len(list(cache.glob("tiny.detector-v*.pth"))) == 1   # the conversion, next to the publisher's file
