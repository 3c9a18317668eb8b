"""Gating for tests marked `integration` (root, iproute2, nftables, ethtool, netns).

Missing capabilities skip those tests, except where the run must prove them: with CI=true or
PROBER_REQUIRE_INTEGRATION=1, any skip of an integration test (ours, or one a test or fixture
raises itself) is reported as a failure, because a green run that skipped them is a red run.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Generator
from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"
REQUIRED_TOOLS = ("ip", "nft", "ethtool", "sysctl")
_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"


def integration_required() -> bool:
    ci = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
    return ci or os.environ.get("PROBER_REQUIRE_INTEGRATION", "").strip() == "1"


@functools.cache
def integration_problems() -> tuple[str, ...]:
    """What stops integration tests from running here; computed once per session."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    tools = {name: shutil.which(name) or shutil.which(name, path=_SBIN_PATH)
             for name in REQUIRED_TOOLS}
    problems += [f"`{name}` not installed" for name, path in tools.items() if path is None]
    ip = tools["ip"]
    if not problems and ip is not None:
        probe = f"prober-capcheck-{os.getpid()}"
        created = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True,
                                 timeout=10, check=False)
        if created.returncode != 0:
            problems.append(f"cannot create a network namespace: {created.stderr.strip()}")
        else:
            subprocess.run([ip, "netns", "delete", probe], capture_output=True, timeout=10,
                           check=False)
    return tuple(problems)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture: a missing capability must not surface as a fixture error instead.
    if item.get_closest_marker("integration") is None:
        return
    problems = integration_problems()
    if problems:
        pytest.skip("integration test cannot run here: " + "; ".join(problems))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("integration") is not None
        and integration_required()
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            "integration test would have been skipped, but CI=true or "
            f"PROBER_REQUIRE_INTEGRATION=1 requires it to run: {reason}"
        )
    return report
