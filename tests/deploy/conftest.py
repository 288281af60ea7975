import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread (as tests/export): on a shared 2-core machine, two spinning OpenMP
    threads per process slow tracing and the comparisons down several times over."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# A tiny mask detector (narrow ResNet-18) at a small test size; its checkpoint carries class names,
# category ids and an iteration, as a training run's does.
TINY = ["backbone=resnet18_narrow", "model.num_classes=3", "model.class_names=[circle,square,triangle]",
        "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64", "model.roi_heads.conv_dim=16",
        "model.input.min_size_test=160", "model.input.max_size_test=256", "model.roi_heads.detections_per_img=30",
        "model.rpn.pre_nms_topk_test=300", "model.rpn.post_nms_topk_test=300"]
CATEGORY_IDS = [3, 7, 9]
ITERATION = 17


def tiny_model(name: str = "mask_rcnn_fpn", *overrides: str):
    """The tiny detector with seeded random weights; a mask head's logits widened (std 1, as
    tests/export does) so its masks have edges to compare."""
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config([f"model={name}", *TINY, *overrides])
    model = build_model(cfg).eval()
    if getattr(model.roi_heads, "mask_head", None) is not None:
        torch.nn.init.normal_(model.roi_heads.mask_predictor.mask_fcn_logits.weight, std=1.0)
    return model, cfg


def write_checkpoint(path, name: str = "mask_rcnn_fpn", *overrides: str):
    from omegaconf import OmegaConf

    from detector.weights.checkpoint_io import save_checkpoint

    model, cfg = tiny_model(name, *overrides)
    save_checkpoint({"model": model.state_dict(), "iteration": ITERATION, "category_ids": CATEGORY_IDS,
                     "config": OmegaConf.to_container(cfg, resolve=True)}, path)
    return path


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """A tiny mask model's checkpoint (score_thresh 0.2) and its three exports, by format."""
    from detector.export import export_model

    folder = tmp_path_factory.mktemp("exported")
    checkpoint = write_checkpoint(folder / "model.pth", "mask_rcnn_fpn", "model.roi_heads.score_thresh=0.2")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    files = {"checkpoint": checkpoint}
    for fmt, name in (("onnx", "model.onnx"), ("openvino", "model.xml"), ("torchscript", "model.pt")):
        files[fmt] = export_model(checkpoint, fmt, folder / name)
    torch.set_num_threads(previous)
    return files


@pytest.fixture(scope="session")
def make_model():
    """tiny_model(name, *overrides) -> (model, cfg), for the tests (conftest is not importable by name)."""
    return tiny_model


@pytest.fixture(scope="session")
def checkpoint_writer():
    """write_checkpoint(path, name, *overrides) -> path, for the tests."""
    return write_checkpoint


# A tiny detector briefly trained on the generated shapes (tests/reliability's tiny run), shared by
# the eval_only, benchmark and int8 tests: one short training per session.
TRAINED_ITERATIONS = 20
TRAINED_RUN = [f"train.max_iter={TRAINED_ITERATIONS}", f"train.checkpoint_period={TRAINED_ITERATIONS}",
               "train.amp=none", "test.analysis=off", "dataset.num_test=4", "model.roi_heads.score_thresh=0.01"]


def evaluate_run(trained: dict, weights, name: str, *extra: str):
    """eval_only of `weights` on the trained run's data (its overrides, `extra` added) into
    trained["root"]/name: (metrics, output folder)."""
    from reliability_helpers import tiny  # on pytest.ini's pythonpath

    from detector.config import load_config
    from detector.engine.run import evaluate_checkpoint
    from detector.tasks.detection import DetectionTask

    out = trained["root"] / name
    cfg = load_config(tiny(trained["root"] / "shapes", out, *TRAINED_RUN, "eval_only=true", f"model.weights={weights}",
                           *extra))
    return evaluate_checkpoint(cfg, DetectionTask()), out


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """{"root", "checkpoint", "files": {onnx, openvino}, "expected": (the checkpoint's eval_only
    metrics, its output folder), "iterations", "evaluate": evaluate_run bound to this run}."""
    from reliability_helpers import tiny

    from detector.config import load_config
    from detector.engine.run import train
    from detector.export import export_model
    from detector.tasks.detection import DetectionTask

    root = tmp_path_factory.mktemp("deploy_eval")
    out = root / "run"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    train(load_config(tiny(root / "shapes", out, *TRAINED_RUN)), DetectionTask())
    checkpoint = out / "checkpoints" / "model_final.pth"
    files = {fmt: export_model(checkpoint, fmt, root / f"model.{suffix}")
             for fmt, suffix in (("onnx", "onnx"), ("openvino", "xml"))}
    run = {"root": root, "checkpoint": checkpoint, "files": files, "iterations": TRAINED_ITERATIONS}
    run["evaluate"] = lambda weights, name, *extra: evaluate_run(run, weights, name, *extra)
    run["expected"] = run["evaluate"](checkpoint, "eval_pth")
    torch.set_num_threads(previous)
    return run
