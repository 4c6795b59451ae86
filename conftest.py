"""Test-session settings shared by `tests/` and the notebook run: a fresh bvvlab cache.

Every test session (the xdist controller and its workers together) gets its own empty cache
directory, so results never depend on what `~/.cache/bvvlab` holds on this machine; it is
removed when the session ends. `BVVLAB_TEST_CACHE=DIR` keeps a cache across sessions instead
(faster local reruns). Notebook kernels started by nbval inherit the variable.
"""

import os
import shutil
import tempfile

_OWN = None
if "BVVLAB_TEST_CACHE" in os.environ:
    os.environ["BVVLAB_CACHE"] = os.environ["BVVLAB_TEST_CACHE"]
elif os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("BVVLAB_SESSION_CACHE"):
    os.environ["BVVLAB_CACHE"] = os.environ["BVVLAB_SESSION_CACHE"]  # the controller's, inherited
else:
    _OWN = tempfile.mkdtemp(prefix="bvvlab-test-cache-")
    os.environ["BVVLAB_CACHE"] = os.environ["BVVLAB_SESSION_CACHE"] = _OWN


def pytest_unconfigure(config):
    if _OWN is not None:
        shutil.rmtree(_OWN, ignore_errors=True)
