"""Test-session settings: offline, private HF home, one torch thread per xdist worker."""

import os
import tempfile

# never touch a hub; keep copied remote code out of the user's HF cache (docs/stack.md section 2.8)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="bvvlab-hf-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one thread each instead of four threads fighting
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


import shutil  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def broken_font(tmp_path, monkeypatch):
    """A private copy of data/fonts that a test may delete or damage; yields the font file."""
    from bvvlab.core.runinfo import data_dir
    from bvvlab.glyph import font

    shutil.copytree(data_dir() / "fonts", tmp_path / "fonts")
    monkeypatch.setenv("BVVLAB_DATA", str(tmp_path))
    font._font_bytes.cache_clear()
    font._load.cache_clear()
    yield tmp_path / font.FONT_FILE
    font._font_bytes.cache_clear()
    font._load.cache_clear()
