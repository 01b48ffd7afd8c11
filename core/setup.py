"""The sentiment model's scorer in C (sentiment_core). make installs it into .venv when a C
compiler is at hand; without it, model.py serves with its pure-Python scorer."""

from setuptools import Extension, setup

setup(
    name="sentiment-core",
    version="2.0",
    description="The tweet sentiment model's scorer in C; model.py's own is the reference",
    ext_modules=[
        Extension(
            "sentiment_core",
            ["sentiment_core.c", "porter.c"],
            depends=["porter.h"],
            extra_compile_args=["-O2"],
        )
    ],
)
