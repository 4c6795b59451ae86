"""Training curves: the live one is ONE output redrawn in place (counted in a real kernel), the
units have their own titled axes, the full-split evaluation is marked, and papermill logs a
progress bar."""

from __future__ import annotations

import json
import logging
import queue
import textwrap

import nbformat
import pytest

from bvvlab.app import plots


def _records(steps: int = 30) -> list[dict]:
    """What the trainer emits for `steps` steps with log_every=1, eval_every=10: a train record
    per step, a sample evaluation every 10th step, the evaluation over the full split
    (`val_full: true`) last."""
    out = []
    for step in range(1, steps + 1):
        out.append({"kind": "train", "step": step, "tokens": 64 * step, "loss": 6.0 - 0.1 * step, "lr": 1e-3})
        if step % 10 == 0 and step < steps:
            out.append({"kind": "eval", "step": step, "tokens": 64 * step, "val_bpc": 4.0 - 0.05 * step,
                        "val_full": False})
    out.append({"kind": "eval", "step": steps, "tokens": 64 * steps, "val_bpc": 2.4, "val_full": True})
    return out


FEED = textwrap.dedent("""
    from bvvlab.app import plots
    live = plots.LiveCurves("t", live=True)
    for rec in {records!r}:
        live(rec)
""")


@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=120)
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _run(kc, code: str, allow_stdin: bool = True) -> list[dict]:
    """Execute `code` in the kernel; every IOPub message the cell produced, in order.
    `allow_stdin`: True as JupyterLab sends it, False as papermill/nbclient do."""
    msgs: list[dict] = []
    reply = kc.execute_interactive(code, output_hook=msgs.append, timeout=120, allow_stdin=allow_stdin)
    assert reply["content"]["status"] == "ok", reply["content"]
    while True:  # anything still in flight after the idle status
        try:
            msgs.append(kc.get_iopub_msg(timeout=0.2))
        except queue.Empty:
            break
    errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
    assert not errors, errors
    return msgs


def _check_figure(fig: dict, records: list[dict]) -> None:
    train, sample, full = fig["data"]
    assert train["y"] == [r["loss"] for r in records if r["kind"] == "train"]
    assert sample["y"] == [r["val_bpc"] for r in records if r["kind"] == "eval" and not r["val_full"]]
    assert full["y"] == [records[-1]["val_bpc"]] and full["marker"]["symbol"] == "diamond"
    assert (len(train["x"]), len(sample["x"]), len(full["x"])) == (30, 2, 1)
    assert (train.get("yaxis", "y"), sample["yaxis"], full["yaxis"]) == ("y", "y2", "y2")
    assert fig["layout"]["yaxis"]["title"]["text"] == "train loss (nats/token)"
    assert fig["layout"]["yaxis2"]["title"]["text"] == "validation bits/char"
    assert fig["layout"]["yaxis2"]["overlaying"] == "y"


def test_live_curves_publish_one_output_and_update_it_in_place(kernel):
    """33 records (30 steps) in a real kernel: exactly one display_data for the whole run (plotly's
    own display appended one per record), the figure replaced inside it on every record (an
    Output widget's state update: JupyterLab's plotly renderer ignores update_display), and
    `close()` turns that one output into the final plain plotly figure with every point."""
    records = _records(30)
    assert len(records) == 33
    msgs = _run(kernel, FEED.format(records=records))
    kinds = [m["msg_type"] for m in msgs if m["msg_type"] in ("display_data", "update_display_data", "execute_result")]
    assert kinds == ["display_data"]
    shown = next(m for m in msgs if m["msg_type"] == "display_data")["content"]
    assert "application/vnd.jupyter.widget-view+json" in shown["data"]
    display_id = shown["transient"]["display_id"]
    updates = [m["content"]["data"]["state"]["outputs"] for m in msgs if m["msg_type"] == "comm_msg"
               and "outputs" in m["content"]["data"].get("state", {})]
    assert len(updates) == 1 + len(records)  # the empty figure, then one redraw per record
    assert all(len(u) == 1 for u in updates)  # one figure inside the widget, never a stack
    _check_figure(updates[-1][0]["data"][plots.PLOTLY_MIME], records)

    msgs = _run(kernel, "live.close()")
    final = [m["content"] for m in msgs if m["msg_type"] in ("display_data", "update_display_data")]
    assert [m["transient"]["display_id"] for m in final] == [display_id]
    assert [m["msg_type"] for m in msgs if m["msg_type"] in ("display_data", "update_display_data")] == \
        ["update_display_data"]
    _check_figure(final[0]["data"][plots.PLOTLY_MIME], records)


def test_not_live_under_a_kernel_without_stdin(kernel):
    """papermill/nbclient kernels do not allow stdin: no live figure, nothing displayed."""
    msgs = _run(kernel, "from bvvlab.app import plots\nlive = plots.LiveCurves('t')\nlive({'kind': 'train', "
                        "'step': 1, 'tokens': 1, 'loss': 1.0})\nprint(live.live)", allow_stdin=False)
    assert not [m for m in msgs if m["msg_type"] in ("display_data", "update_display_data")]
    assert any(m["msg_type"] == "stream" and m["content"]["text"].strip() == "False" for m in msgs)
    live_msgs = _run(kernel, "print(plots.LiveCurves('t').live)")  # JupyterLab allows stdin: live
    assert any(m["msg_type"] == "stream" and m["content"]["text"].strip() == "True" for m in live_msgs)


def test_static_curves_mark_the_full_split_and_title_both_axes():
    fig = plots.training_curves({"frozen": _records(30), "unfrozen": _records(20)})
    names = [t.name for t in fig.data]
    assert names == ["frozen train loss", "frozen val bits/char (sample)", "frozen val bits/char (full split)",
                     "unfrozen train loss", "unfrozen val bits/char (sample)", "unfrozen val bits/char (full split)"]
    full = fig.data[2]
    assert full.marker.symbol == "diamond" and list(full.y) == [2.4] and full.yaxis == "y2"
    assert list(fig.data[1].x) == [64 * 10, 64 * 20]  # the sample line does not run into the full-split point
    assert fig.layout.yaxis.title.text == "train loss (nats/token)"
    assert fig.layout.yaxis2.title.text == "validation bits/char" and fig.layout.xaxis.title.text == "tokens seen"


@pytest.mark.slow
def test_papermill_logs_a_progress_bar(tmp_path, caplog):
    """Not live (papermill), LiveCurves(total=...) writes a text bar to stderr, which papermill
    passes to its log (`--log-output`) instead of a widget it cannot show."""
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(f"""
        from bvvlab.app import plots
        live = plots.LiveCurves("t", total=30, mininterval=0)
        for rec in {_records(30)!r}:
            live(rec)
        live.close()
        print("live:", live.live)
    """))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    with caplog.at_level(logging.INFO, logger="papermill"):
        papermill.execute_notebook(str(src), str(out), kernel_name="python3", log_output=True, progress_bar=False)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "live: False" in logged
    assert "train: 100%" in logged and "30/30" in logged
    executed = json.loads(out.read_text())
    assert not [o for o in executed["cells"][0]["outputs"] if o["output_type"] == "display_data"]


def test_fusion_figure_draws_differences_from_the_better_expert_in_percent():
    """Bars from 0 bits/char hid a 0.4% difference (issue 24): each bar is the percent gap to the
    better expert on that set, so 0.4% is a visible bar and the absolute value stays in the hover."""
    from bvvlab.app.plots import fusion_figure

    bpc = {"en-ru": {"en": 5.00, "mixed": 6.0}, "en-zh": {"en": 5.02, "mixed": 5.5},
           "fused:bayes": {"en": 5.02, "mixed": 5.39}}
    fig = fusion_figure(bpc, sets=("en", "mixed"))
    got = {t.name: [round(v, 6) for v in t.y] for t in fig.data}
    assert got == {"en-ru": [0.0, round(100 * (6.0 / 5.5 - 1), 6)], "en-zh": [0.4, 0.0], "fused:bayes": [0.4, -2.0]}
    assert list(fig.data[2].customdata) == [5.02, 5.39] and fig.layout.yaxis.ticksuffix == "%"


def test_chance_heatmap_is_centred_on_chance_and_spans_the_data():
    """Values 0.08-0.10 against chance 0.042 on a 0-1 scale were one colour (07's retrieval map)."""
    from bvvlab.app.plots import chance_heatmap, forward_time_note

    fig = chance_heatmap([[0.08, 0.10], [0.09, None]], ["a", "b"], [0, 1], chance=0.042, title="t")
    h = fig.data[0]
    assert h.zmid == 0.042 and h.zmin == pytest.approx(0.042 - 0.058) and h.zmax == pytest.approx(0.10)
    note = forward_time_note({"fused": 0.02, "one_expert": 0.01, "ratio": 2.0}, 2)
    assert "20.0 ms" in note and "10.0 ms" in note and "2.00x" in note and "all 2 experts" in note and "at least 2x" in note
