"""The sentiment model's scorer in C (sentiment_core), and helpers of the contract's
(contract_core: the quote count, a predict body and a V2 tensor read in place, answers and
scores written). make installs them into .venv when a C compiler is at hand; without them,
model.py serves with its pure-Python scorer and contract.py reads every body with msgspec and
counts quotes in Python."""

from setuptools import Extension, setup

setup(
    name="sentiment-core",
    version="2.4",
    description="The tweet sentiment model's scorer in C; model.py's own is the reference",
    ext_modules=[
        Extension(
            "sentiment_core",
            ["sentiment_core.c", "porter.c"],
            depends=["porter.h"],
            extra_compile_args=["-O2"],
        ),
        Extension("contract_core", ["contract_core.c"], extra_compile_args=["-O2"]),
    ],
)
