"""The shipper's rule for a live writer's files (scoring/server/shipper.py): the newest file
of a collection waits while its rolling period runs, and ships once the period is over (plus
the margin), so an idle deployment's last records leave the pod without another request.
Real files, a real folder destination."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scoring.server.shipper import PERIOD_MARGIN_S, Folder, Shipper

pytestmark = pytest.mark.server

RUN = "0123abcd"


def spool_file(spool: Path, collection: str, opened: int, seq: int) -> Path:
    folder = spool / "ep" / "blue" / collection / "2026" / "12" / "07" / "22"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{RUN}-{os.getpid()}-{opened}-{seq}.jsonl"
    path.write_text('{"id":1}\n')
    return path


def test_a_live_writers_newest_file_ships_once_its_period_is_over(tmp_path: Path) -> None:
    spool, dest = tmp_path / "spool", tmp_path / "dest"
    dest.mkdir()
    now = int(time.time())
    period = 60
    this_period = now // period * period
    old = spool_file(spool, "model_inputs", this_period - 2 * period, 1)  # idle since then
    if now - this_period < PERIOD_MARGIN_S:  # the period just ended: still within the margin
        pytest.skip("too close to a period boundary for a stable check")
    current = spool_file(spool, "model_outputs", now, 2)  # newest, period running
    shipper = Shipper(spool, Folder(dest), RUN, lambda: {os.getpid()}, period_s=period)
    assert shipper.ship(final=False) == 1
    assert not old.exists() and current.exists()
    assert (dest / old.relative_to(spool)).read_text() == '{"id":1}\n'
    assert shipper.shipped == {"model_inputs": 1}
    # Without a period (roll only), the newest file of a live writer waits.
    kept = spool_file(spool, "model_inputs", this_period - 2 * period, 3)
    roll_only = Shipper(spool, Folder(dest), RUN, lambda: {os.getpid()})
    assert roll_only.ship(final=False) == 2
    assert kept.exists()
