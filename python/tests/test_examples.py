"""The examples under examples/python run and check their own results."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.environ.get("NDCHAN_EXAMPLES") or os.path.join(HERE, "..", "..", "examples", "python")


@pytest.mark.parametrize("script,args", [("pipeline.py", ["-n", "16", "--busy-every", "4"]),
                                         ("pool_imap.py", ["-n", "60"]),
                                         ("broadcast.py", ["-n", "60"]),
                                         ("asyncio_consumer.py", ["-n", "200"])])
def test_example(script, args):
    path = os.path.join(EXAMPLES, script)
    if not os.path.exists(path):
        pytest.skip("%s not found" % path)
    r = subprocess.run([sys.executable, path] + args, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert r.returncode == 0, r.stderr
    print(r.stdout)
