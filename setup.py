"""Packaging, so Beam workers (multi-process DirectRunner, Dataflow ``--setup_file``) can import the stages."""
from setuptools import find_packages, setup

setup(
    name="speechmill",
    version="0.1.0",
    description="Build transcribed speech corpora from internet audio with Apache Beam",
    packages=find_packages(include=["acquisition*", "asr*", "audio*", "corpus*", "dedup*", "exports*", "pipelines*", "report*",
                                    "run*", "schemas*", "speakers*", "storage*", "transforms*", "tts*"]),
    python_requires=">=3.10",
    entry_points={"console_scripts": ["speechmill = pipelines.cli:main"]},
    install_requires=[line.strip() for line in open("requirements.txt")
                      if line.strip() and not line.startswith("#")],
)
