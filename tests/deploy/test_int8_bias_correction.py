"""--bias-correction reaches NNCF: a small network in the feature scope quantized with the full and
with the fast correction gives two different int8 models (the corrections differ), and the same
choice twice gives the same model. Run in its own process, as the other int8 tests: NNCF and
OpenVINO's int8 models loaded into the pytest process left it to die later."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, tempfile
import numpy as np, torch, openvino as ov
from detector.export.int8 import quantize_openvino

class Net(torch.nn.Module):   # named like the detector's backbone, so the float scope leaves it to NNCF
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(16, 8, 3, padding=1))
    def forward(self, x):
        return self.backbone(x[None])[0]

torch.manual_seed(0)
net = Net().eval()
images = [torch.rand(3, 24, 24) for _ in range(4)]
with tempfile.TemporaryDirectory() as folder:
    torch.onnx.export(net, (images[0],), f"{folder}/net.onnx", input_names=["image"], dynamo=False)
    float_model = ov.convert_model(f"{folder}/net.onnx")
core = ov.Core()
def output(choice):
    model = quantize_openvino(float_model.clone(), images, log=lambda m: None, bias_correction=choice)
    quantized = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({0: images[0].numpy()})[0], quantized
full, quantized = output("full")
fast, _ = output("fast")
again, _ = output("full")
print(json.dumps({"quantized": quantized, "full_vs_fast": float(np.abs(full - fast).max()),
                  "full_vs_full": float(np.abs(full - again).max())}))
"""


def test_full_and_fast_bias_correction_give_different_int8_models():
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, cwd=repo,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(result)
    assert result["quantized"] >= 3               # the convolutions were quantized at all
    assert result["full_vs_full"] == 0.0          # deterministic: a difference below is the choice's
    assert result["full_vs_fast"] > 1e-6
