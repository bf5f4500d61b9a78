"""The garbage collector's set-up for a server process."""

from __future__ import annotations

import gc

from chateau.collector import tune_collector


def test_tune_collector_freezes_what_exists_and_raises_only_the_young_threshold() -> None:
    before = gc.get_threshold()
    frozen_by_the_session = gc.get_freeze_count()  # see conftest.py
    kept: list[int] = [1]  # something start-up made (a container: tracked)
    assert any(obj is kept for obj in gc.get_objects())
    try:
        frozen = tune_collector(4321)
        assert frozen == gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (4321, before[1], before[2])
        # Frozen objects are out of every generation a collection walks.
        assert not any(obj is kept for obj in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert any(obj is kept for obj in gc.get_objects())
    assert gc.get_freeze_count() == 0
    if frozen_by_the_session:
        gc.freeze()
