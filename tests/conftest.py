"""Fixtures shared by the test files; the helpers they use live in testing_utils.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.hub_server import local_hub  # noqa: F401  (the local Hub double, a fixture for every test file)
from testing_utils import GLUE_DIR


@pytest.fixture
def glue_dir() -> Path:
    if not (GLUE_DIR / "SST-2" / "dev.tsv").is_file():
        pytest.skip(f"GLUE data not found under {GLUE_DIR}")
    return GLUE_DIR


@pytest.fixture(autouse=True, scope="session")
def _isolated_sage_cache(tmp_path_factory):
    """Maps and tokenized data that tests cache go to a temporary folder, not the user's ~/.cache."""
    old = os.environ.get("SAGE_HF_CACHE")
    os.environ["SAGE_HF_CACHE"] = str(tmp_path_factory.mktemp("sage_hf_cache"))
    yield
    if old is None:
        os.environ.pop("SAGE_HF_CACHE", None)
    else:
        os.environ["SAGE_HF_CACHE"] = old
