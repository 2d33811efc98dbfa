import os
import uuid

import pytest

np = pytest.importorskip("numpy", reason="numpy is not installed (python3-numpy)")
ndchan = pytest.importorskip("ndchan", reason="the ndchan extension is not built or not on PYTHONPATH")


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
