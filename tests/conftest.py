"""Shared fixtures: paths to the project's shared data and small helper files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests (and the gateways and CLIs they start) read and write wattserve's cache in a
    folder of their own: never the user's ~/.cache/wattserve, whose shared profile may come
    from another wattserve version or machine."""
    before = os.environ.get("WATTSERVE_CACHE_DIR")
    os.environ["WATTSERVE_CACHE_DIR"] = str(tmp_path_factory.mktemp("wattserve-cache"))
    yield
    if before is None:
        os.environ.pop("WATTSERVE_CACHE_DIR", None)
    else:
        os.environ["WATTSERVE_CACHE_DIR"] = before
