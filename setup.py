from setuptools import find_packages, setup

setup(
    name="detector",
    version="0.1.0",
    description="ResNet-FPN Faster R-CNN object detection and ResNet classification, configured with Hydra",
    packages=find_packages(include=["detector", "detector.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4,<=2.14.1",
        "torchvision>=0.19,<=0.29.1",
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.3",
        "albumentations>=2.0,<2.1",
        "opencv-python-headless>=4.8",
        "pycocotools>=2.0.7",
        "faster-coco-eval>=1.6",
        "tensorboard>=2.14",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "numpy>=1.24",
        "pillow>=10",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout>=2.1", "onnx>=1.15", "onnxruntime>=1.17", "hydra-submitit-launcher>=1.2"],
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],   # tools/export.py --format onnx, and running the file
        "slurm": ["hydra-submitit-launcher>=1.2"],       # hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml)
    },
)
