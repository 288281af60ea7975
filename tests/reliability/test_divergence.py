"""The non-finite guard: a run forced to diverge stops at once with the iteration and every
loss term in its message, exits non-zero, and leaves the last good checkpoint intact --
loadable, finite, and good to resume from with a sane learning rate.

The run is forced to diverge after it has written checkpoints: a multi-step schedule with
gamma=1e9 takes the lr from 1e-3 to 1e6 after iteration 4 (checkpoints every 2 iterations),
so the step of iteration 5 wrecks the weights and the loss of iteration 6 is not finite.
(tests/tools/test_train_net.py covers lr=1e6 from the first iteration.)
"""
from __future__ import annotations

import math
import re

import torch

from reliability_helpers import assert_clean_failure, observe, tiny, train_net

LOSS_TERMS = ("loss_box_reg", "loss_classifier", "loss_objectness", "loss_rpn_box_reg")
DIVERGE = ["train.max_iter=8", "train.checkpoint_period=2", "solver.lr_scheduler=multistep", "solver.steps=[4]",
           "solver.gamma=1e9"]


def test_diverging_run_stops_with_iteration_and_losses_and_keeps_the_last_good_checkpoint(generated_shapes, tmp_path):
    from detector import load_model

    out = tmp_path / "diverged"
    proc = train_net(tiny(generated_shapes, out, *DIVERGE), check=False)
    stderr = assert_clean_failure(proc, "error: Non-finite loss at iteration 6: ")
    assert proc.returncode == 1
    message = stderr.strip().splitlines()[-1]
    for term in LOSS_TERMS:
        assert re.search(rf"{term}=\S+", message), (term, message)
    assert any(not math.isfinite(float(v)) for v in re.findall(r"=([-+\w.]+)", message))
    assert "Lower solver.base_lr" in message and "train.clip_grad_norm" in message  # what to do
    assert message in (out / "log.txt").read_text()  # also in the run's log
    observe("divergence: lr 1e-3 -> 1e6 after iteration 4 (train_net)", message,
            "iterations 5-6 only: exit 1, last.pth (iteration 4) finite and loadable; resuming with a lower lr finishes")
    assert "iter: 5/8" in proc.stdout and "iter: 6/8" not in proc.stdout  # stopped at once

    checkpoints = out / "checkpoints"
    assert not (checkpoints / "model_final.pth").exists()
    last = torch.load(checkpoints / "last.pth", weights_only=True)
    assert last["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    model = load_model(checkpoints / "last.pth", ["model.roi_heads.score_thresh=0.0"])
    detections = model([torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(0))])[0]
    assert torch.isfinite(detections["boxes"]).all() and torch.isfinite(detections["scores"]).all()

    # Nothing is lost but the iterations after the checkpoint: resume with a sane schedule
    # and a lower lr, which the very first resumed iteration already uses.
    resumed = train_net(tiny(generated_shapes, out, "train.max_iter=8", "train.checkpoint_period=2",
                             "train.resume=true", "solver.base_lr=0.0005"))
    assert f"Resumed from {checkpoints / 'last.pth'} at iteration 4" in resumed.stdout
    lrs = {int(i): float(lr) for i, lr in re.findall(r"iter: (\d+)/8 .* lr: (\S+)", resumed.stdout)}
    assert set(lrs) == {5, 6, 7, 8} and all(0 < lr <= 0.00025 for lr in lrs.values()), lrs
    final = torch.load(checkpoints / "model_final.pth", weights_only=True)
    assert final["iteration"] == 8
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
