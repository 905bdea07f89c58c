"""32 MiniVMs at once on the 2-core machine, under TCG: every node boots (no timer panic
however starved its vCPU), answers `lab exec`, and powers off by its button.
One round here; ``bench/lab_scale.py`` runs five and records the phase times."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.labround import one_round, write_lab
from tests.test_lab import bundle  # noqa: F401 - a fixture

NODES = 32

pytestmark = [pytest.mark.engine, pytest.mark.boot, pytest.mark.long]


def test_32_nodes_up_exec_down(bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    result = one_round(write_lab(tmp_path, bundle, NODES), NODES)
    assert not result.problems, "\n".join(result.problems)
    assert result.rss_total > 0
