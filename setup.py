"""Installation script for reid_pbn."""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md").read_text(encoding="utf-8")
# tools/serve.py (HTTP service) and tools/export.py (ONNX: the torch.export-based exporter emits
# through onnxscript; the parity check runs ONNX Runtime).
SERVE = ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9"]
EXPORT = ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"]

setup(
    name="reid_pbn",
    version="0.1.0",
    description=(
        "Domain-robust person re-identification: Patch-aware Batch Normalization, "
        "Batch Normalization Embeddings and a FAISS retrieval engine"
    ),
    long_description=README,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        exclude=("configs", "configs.*", "tests", "tests.*", "tools", "benchmarks", "datasets")
    ),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.23",
        "scikit-learn>=1.2",
        "scipy>=1.9",
        "yacs>=0.1.8",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "Pillow>=9.0",
        "PyYAML>=6.0",
        # faiss-gpu also runs on machines without a GPU (it falls back to CPU indexes);
        # its wheels exist only for Linux x86-64, so other platforms take faiss-cpu.
        "faiss-gpu>=1.7.4; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "faiss-cpu>=1.7.4; platform_system != 'Linux' or platform_machine != 'x86_64'",
    ],
    package_data={"reid_pbn.serving": ["static/*.html"]},
    extras_require={
        # Starlette's TestClient takes httpx2 (httpx before Starlette 1.x); selenium drives the
        # system Chromium in the page test.
        "dev": ["pytest>=7.0", "ruff>=0.4", *SERVE, *EXPORT, "httpx>=0.27", "httpx2>=2.0",
                "selenium>=4.20"],
        "tensorboard": ["tensorboard>=2.10"],
        "serve": SERVE,
        "export": EXPORT,
    },
    entry_points={},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
