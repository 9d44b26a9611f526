"""Packaging for the icefall SSL toolkit: ``pip install -e .`` after torch is installed."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="icefall-ssl",
    version="0.1.0",
    description="Self-supervised speech learning recipes: k2SSL, SpidR/DinoSR, self-pinching gates",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["icefall", "icefall.*"]),
    python_requires=">=3.9",
    install_requires=requirements,
    # Optional accelerators; never required (no k2 wheel for py3.11 + torch 2.13).
    extras_require={"k2": ["k2"], "kaldifeat": ["kaldifeat"], "hf": ["transformers"]},
)
