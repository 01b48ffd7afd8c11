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


TOKEN = "test-token-0123456789"
OTHER_TOKEN = "rotated-token-abcdef"


@pytest.fixture(scope="session")
def app():
    """The app with two valid tokens and small limits, as a test would configure it."""
    import api

    return api.create_app(
        {
            "API_TOKEN": f"{TOKEN},{OTHER_TOKEN}",
            "MAX_TWEETS": 50,
            "MAX_TWEET_CHARS": 280,
            "MAX_BODY_BYTES": 64 * 1024,
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()
