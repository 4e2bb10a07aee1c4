"""The local system (`python -m offload.local run`), started once per session on free ports."""

import sys
from collections.abc import Iterator

import pytest

from tests.e2e.local_system import LocalSystem, running
from tests.support import ROOT, SENDER

__all__ = ["LocalSystem"]


@pytest.fixture(scope="session")
def local_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    log = tmp_path_factory.mktemp("local-system") / "run.log"
    offload = [sys.executable, "-m", "offload.local"]
    with running(offload, "--sender", SENDER, cwd=ROOT, log=log) as system:
        yield system
