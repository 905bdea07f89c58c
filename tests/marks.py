"""Integration marks per fixture: a fixture that reaches a real engine, QEMU or GNS3 server
marks every test that uses it (directly or through another fixture), so that a pure test in the
same module stays a unit test.

    @fixture("engine", scope="session")
    def docker_api(): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

# fixture name -> the marks its tests get (engine, boot, gns3); () for a fixture that is slow
# but needs none of them (an integration test all the same)
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {}


def fixture(*marks: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``pytest.fixture(**kwargs)`` whose tests are integration tests carrying ``marks``."""
    def wrap(function: Callable[..., Any]) -> Any:
        FIXTURE_MARKS[kwargs.get("name", function.__name__)] = marks
        return pytest.fixture(**kwargs)(function)
    return wrap


def mark(item: pytest.Item) -> None:
    """Mark ``item`` ``unit`` or ``integration`` (plus its fixtures' marks)."""
    heavy = {"engine", "boot", "gns3"} & {m.name for m in item.iter_markers()}
    from_fixtures = [FIXTURE_MARKS[name] for name in getattr(item, "fixturenames", ())
                     if name in FIXTURE_MARKS]
    for name in {m for marks in from_fixtures for m in marks} - heavy:
        item.add_marker(getattr(pytest.mark, name))
    item.add_marker(pytest.mark.integration if heavy or from_fixtures else pytest.mark.unit)
