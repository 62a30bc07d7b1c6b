"""Build hook only (metadata is in pyproject.toml): copy the fixture library, simulator profiles and
example scenarios into the wheel under harness/_shipped/, so an installed voiceload runs from any
directory. The directories and patterns are declared once, in harness/paths.py."""

import runpy
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = runpy.run_path(str(HERE / "harness" / "paths.py"))["SHIPPED"]


class BuildWithShippedData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the files where they are (harness.paths.shipped)
        for name, (source, patterns) in SHIPPED.items():
            dest = Path(self.build_lib) / "harness" / "_shipped" / name
            dest.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for f in sorted((HERE / source).glob(pattern)):
                    if f.is_file():
                        shutil.copy2(f, dest / f.name)


setup(cmdclass={"build_py": BuildWithShippedData})
