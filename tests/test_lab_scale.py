"""32 MiniVMs at once on a 2-core machine, under TCG, driven as a user drives a lab with the
CLI's default timeouts: every node's main process starts (no timer panic however starved its
vCPU), every node answers `lab exec` with its own name, and every node powers off by its
button. One round; ``bench/lab_scale.py`` runs several and records the phase times."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.labround import one_round, write_lab

NODES = 32


@pytest.mark.boot
@pytest.mark.long
def test_32_nodes_up_exec_down(bundle: Path, tmp_path: Path) -> None:
    result = one_round(write_lab(tmp_path, bundle, NODES), NODES)
    assert not result.problems, "\n".join(result.problems)
    assert result.rss_total > 0
