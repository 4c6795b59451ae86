"""Run metadata: what every meta.json carries, written atomically and readable by others."""

import json
import os
import stat

from bvvlab.core.runinfo import run_meta, write_json_atomic


def test_write_json_atomic_round_trip_and_mode(tmp_path):
    path = tmp_path / "sub" / "meta.json"
    write_json_atomic(path, {"a": 1, "p": tmp_path, "t": (1, 2)})
    assert json.loads(path.read_text()) == {"a": 1, "p": str(tmp_path), "t": [1, 2]}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["meta.json"]  # no temporary left behind


def test_run_meta_describes_the_run():
    meta = run_meta({"lr": 1e-3}, seed=7)
    assert meta["config"] == {"lr": 1e-3} and meta["seed"] == 7
    assert meta["git_commit"] and len(meta["git_commit"].split("-")[0]) == 40
    assert meta["packages"]["torch"].startswith("2.13")
    assert meta["device"]["cpu_count"] >= 1
