import os
import uuid

import pytest

try:
    import numpy  # noqa: F401
    import ndchan
    MISSING = ""
except ImportError as e:   # every test module needs both: test_requirements says why they skip
    MISSING = str(e)
    collect_ignore = [f for f in os.listdir(os.path.dirname(os.path.abspath(__file__)))
                      if f.startswith("test_") and f != "test_requirements.py"]


@pytest.fixture
def chan():
    ch = ndchan.Channel.create(slots=4, slot_bytes=1 << 20)
    yield ch
    ch.detach()


@pytest.fixture
def shm_name():
    """A unique channel name, unlinked after the test."""
    name = "ndchan-pytest-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    yield name
    try:
        ndchan.unlink(name)
    except OSError:
        pass
