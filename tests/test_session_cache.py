"""The test session runs against its own fresh cache (issue 9), never the user's ~/.cache/bvvlab."""

import os
from pathlib import Path

from bvvlab.core.runinfo import cache_dir


def test_cache_is_the_sessions_own():
    cache = cache_dir()
    assert os.environ["BVVLAB_CACHE"] == str(cache)
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bvvlab"
    assert cache.resolve() != home.resolve()
    if "BVVLAB_TEST_CACHE" not in os.environ:
        assert cache.name.startswith("bvvlab-test-cache-")
