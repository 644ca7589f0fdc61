"""The SDK's build: setuptools' own, but the wheel gets a synchronous client generated afresh from
the asyncio one (``scripts/unasync.py``), so the two never ship apart. The metadata is in
``pyproject.toml``."""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

unasync = runpy.run_path(str(Path(__file__).resolve().parent / "scripts" / "unasync.py"))


class BuildPy(build_py):
    def build_packages(self) -> None:
        super().build_packages()
        for target, text in unasync["generate"]().items():
            built = Path(self.build_lib, target.relative_to(unasync["PACKAGE"].parent))
            built.write_text(text, encoding="utf-8")


setup(cmdclass={"build_py": BuildPy})
