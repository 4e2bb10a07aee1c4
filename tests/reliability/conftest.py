"""Show the figures the reliability suite printed in pytest's terminal summary (no -s needed)."""

import pytest

from tests.reliability.support import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for table in FIGURES:
            terminalreporter.write_line(table + "\n")
