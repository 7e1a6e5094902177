"""The garbage collector's threshold while imports run (pure logic, no database)."""

from __future__ import annotations

import gc

import pytest

from erp.features.data_processing.import_pipeline import IMPORT_GC_THRESHOLD, fewer_collections


@pytest.fixture
def default_threshold():
    """The collector as a worker child has it: its default threshold, the parent's heap frozen."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.freeze()
    yield
    gc.set_threshold(*before)


def test_the_threshold_is_raised_while_imports_run_and_put_back_when_the_last_ends(default_threshold):
    """Two imports overlapping in one process (the threads pool): the first to end leaves the
    threshold raised for the other; the last puts back the threshold there was before the
    first, and leaves frozen what the worker froze before (its heap before the fork)."""
    frozen_by_the_worker = gc.get_freeze_count()
    with fewer_collections():
        assert gc.get_threshold() == (IMPORT_GC_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0
        with fewer_collections():
            assert gc.get_threshold() == (IMPORT_GC_THRESHOLD, 10, 10)
        assert gc.get_threshold() == (IMPORT_GC_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() >= frozen_by_the_worker > 0


def test_the_threshold_is_put_back_when_an_import_raises(default_threshold):
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("the import failed")
    assert gc.get_threshold() == (700, 10, 10)
