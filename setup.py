"""Builds Sluicegate; a regular install compiles the request path's modules with mypyc (docs/install.md)."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The modules each request runs through: compiled, a request costs a quarter less CPU (docs/benchmarks.md).
# A module here must type-check under mypy, and no class of it may be subclassed by an interpreted class
# (unless marked @mypyc_attr(allow_interpreted_subclasses=True)); docs/install.md has the rules.
COMPILED = [
    "src/sluicegate/auth/aws_sigv4.py",
    "src/sluicegate/core/context.py",
    "src/sluicegate/core/inflight.py",
    "src/sluicegate/endpoints/proxy.py",
    "src/sluicegate/observability/access_log.py",
    "src/sluicegate/observability/metrics.py",
    "src/sluicegate/server/http.py",
    "src/sluicegate/translate/anthropic_awsbedrock.py",
    "src/sluicegate/translate/claude_request.py",
    "src/sluicegate/translate/converse_openai.py",
    "src/sluicegate/translate/eventstream.py",
    "src/sluicegate/translate/openai_awsbedrock.py",  # subclasses AnthropicToAWSBedrock: compiled with it
    "src/sluicegate/translate/openai_azureopenai.py",  # subclasses OpenAIToOpenAI: compiled with it
    "src/sluicegate/translate/openai_openai.py",
    "src/sluicegate/translate/sse.py",
    "src/sluicegate/upstream/connection.py",
    "src/sluicegate/upstream/forward.py",
    "src/sluicegate/upstream/health.py",
    "src/sluicegate/upstream/planner.py",
]
BUILDING = {"bdist_wheel", "build", "build_ext", "install", "bdist", "editable_wheel"}


def compile_setting() -> str:
    """SLUICEGATE_COMPILE: "1" compile (or fail), "0" pure Python, unset: compile if a C compiler is found."""
    setting = os.environ.get("SLUICEGATE_COMPILE", "").strip().lower()
    if setting in ("1", "true", "yes"):
        return "always"
    if setting in ("0", "false", "no"):
        return "never"
    return "auto"


def can_compile() -> bool:
    """A C compiler and the Python headers: what building the extensions needs."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and headers.exists()


def extensions() -> list[Extension]:
    """mypyc's extensions for COMPILED, or none (pure Python)."""
    setting = compile_setting()
    command = set(sys.argv[1:])
    if setting == "never" or not command & BUILDING:
        return []  # metadata only (egg_info, dist_info), or pure Python asked for
    if setting == "auto" and "editable_wheel" in command:
        return []  # an editable install runs the .py files, so that edits take effect
    if setting == "auto" and not can_compile():
        print("sluicegate: no C compiler or Python headers: installing pure Python", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    options = ["--ignore-missing-imports", "--follow-imports=silent"]  # the modules compiled must type-check
    try:
        return mypycify([*options, *COMPILED], group_name="sluicegate", opt_level="3")
    except SystemExit:  # mypy printed the type errors
        if setting == "always":
            raise
        print("sluicegate: mypyc could not compile: installing pure Python", file=sys.stderr)
        return []


class BuildExtensions(build_ext):
    """Without SLUICEGATE_COMPILE=1, a failed compile leaves a pure-Python install instead of no install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # the compiler's errors are printed above this
            if compile_setting() == "always":
                raise
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            print(f"sluicegate: compiling failed ({error}): installing pure Python", file=sys.stderr)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtensions})
