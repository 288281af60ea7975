"""How the exported-file runtimes are set up: ONNX Runtime without spinning threads, and
OpenVINO's fixed-size compilations of repeated image sizes."""
import numpy as np
import torch


def test_onnxruntime_threads_do_not_spin_after_a_run(exported):
    """Spinning worker threads held both cores after each run, and an OpenVINO run right after
    one took 1.5x its time (the deploy benchmark's rows were skewed by it)."""
    from detector.deploy import load_exported

    runner = load_exported(exported["onnx"], threads=1)
    options = runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def detections_close(a: dict, b: dict) -> None:
    assert a["boxes"].shape == b["boxes"].shape and len(a["boxes"]) > 0
    assert torch.allclose(a["boxes"], b["boxes"], atol=1e-2)
    assert torch.allclose(a["scores"], b["scores"], atol=1e-3)
    assert torch.equal(a["labels"], b["labels"])


def test_openvino_compiles_repeated_image_sizes_for_their_size(exported):
    """An image size's second image runs on a graph compiled for that size, with the dynamic
    graph's detections; at most STATIC_SIZES sizes are compiled, later sizes stay dynamic."""
    from detector.deploy import load_exported
    from detector.deploy.openvino_runner import STATIC_SIZES

    runner = load_exported(exported["openvino"], precision="fp32", threads=1)
    generator = torch.Generator().manual_seed(3)
    shapes = [(3, 120, 150), (3, 96, 128), (3, 140, 100)]
    assert len(shapes) > STATIC_SIZES
    for shape in shapes:
        image = torch.rand(*shape, generator=generator)
        first = runner([image])[0]
        assert shape not in runner.static_requests   # one image of a size: the dynamic graph
        second = runner([image])[0]
        detections_close(first, second)
        if shape in runner.static_requests:
            compiled_input = runner.static_requests[shape].model_inputs[0].get_partial_shape()
            assert compiled_input.is_static and [d.get_length() for d in compiled_input] == list(shape)
    assert list(runner.static_requests) == shapes[:STATIC_SIZES]
    # The fixed-size graph is the one that runs a size's later images.
    image = torch.rand(*shapes[0], generator=generator)
    assert runner.request_for(tuple(image.shape)) is runner.static_requests[shapes[0]]
    assert runner.request_for(shapes[-1]) is runner.request


def test_deploy_table_says_when_bf16_rows_ran_without_native_bf16():
    """--bf16 on, on a CPU without native bf16: the rows ran (emulated), and the table says so
    instead of calling them skipped."""
    from detector.benchmarking.deploy import format_deploy

    report = {"threads": 2, "native_bf16": False, "bf16_rows": True, "trained": {}}
    assert "bf16 rows run anyway (--bf16 on), but this CPU has no native bf16" in format_deploy(report)[1]
    assert format_deploy({**report, "bf16_rows": False})[1].startswith("  bf16 rows skipped")
    assert len(format_deploy({**report, "native_bf16": True})) == 1
