"""FastDiSS for fairseq: few-step continuous diffusion for sequence-to-sequence generation.

Install (CPU machine, Python 3.11 or 3.12, from this folder):
    pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install -e .
(PyPI's own torch for Linux is a CUDA build of several GB; on this project's development
machines `pip install torch==2.13.0` finds a CPU build on local disk.)
On a GPU machine install the torch build that matches its CUDA first, then `pip install -e .`.
`bash scripts/setup_env.sh` does the CPU variant in a fresh virtual environment.
"""

from setuptools import find_packages, setup

# fairseq 0.12.2, its last release, does not import on Python >= 3.11 (mutable dataclass
# defaults); ve-fairseq 0.12.3 is the same code fixed for 3.11/3.12 and ships wheels for them
# only. Python 3.10 is not supported: fairseq 0.12.2's PyPI source archive does not build (it
# lacks fairseq/clib/libbase/balanced_assignment.cpp) and pins hydra-core < 1.1, which the
# hydra-core 1.3 below excludes (both seen in the thirty-fifth session, docs/measurements.md).
FAIRSEQ = ["ve-fairseq==0.12.3"]

setup(
    name="fastdiss-fairseq",
    version="0.1.0",
    description="FastDiSS (few-step diffusion seq2seq, ACL 2026 Findings) as a fairseq user-dir plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["fastdiss_fairseq", "fastdiss_fairseq.*"]),
    install_requires=[
        # No upper bound and no plain pin: a torch already installed (the CPU build, or the
        # CUDA build a GPU machine needs) is kept; see the README for the CPU-only set-up.
        "torch>=2.0",
        *FAIRSEQ,
        # fairseq 0.12 was written against these; newer omegaconf changes its parsing.
        "hydra-core>=1.3.2,<1.4",
        "omegaconf>=2.3,<2.4",
        "numpy>=1.21",
        "sacrebleu>=2.0",
        "sacremoses>=0.1",
        "subword-nmt>=0.3.8",
        "rouge-score>=0.1.2",
        "tensorboardX>=2.6",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={
        "console_scripts": [
            "fastdiss-score=fastdiss_fairseq.scoring:main",
            "fastdiss-step-sweep=fastdiss_fairseq.step_sweep:main",
            "fastdiss-options=fastdiss_fairseq.list_options:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
