"""Fixtures shared by the tests: the shipped model, the real data, the app and its client."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import model  # noqa: E402
import train  # noqa: E402


@pytest.fixture(scope="session")
def shipped():
    """The model in artifacts/."""
    return model.load()


@pytest.fixture(scope="session")
def data_path():
    """The 10K tweet data set, or a skip naming where it was looked for."""
    if not train.DEFAULT_DATA.is_file():
        pytest.skip(f"the training data is absent: {train.DEFAULT_DATA} (see shared/data)")
    return train.DEFAULT_DATA
