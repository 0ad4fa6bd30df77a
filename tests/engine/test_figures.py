"""The reconstruction sweep figure: seeds averaged, and a fixed x falls back to the group."""

from __future__ import annotations

import torch

from privacy_attacks.engine.figures import quality_figure


def _rows(with_batch: bool):
    rows = []
    for i, (method, seed) in enumerate((m, s) for m in ("idlg", "ig_lbfgs") for s in range(3)):
        row = {"job": str(i), "method": method, "seed": seed, "recon/psnr": 20.0 + seed, "recon/ssim": 0.5}
        if with_batch:
            row["batch_size"] = 4
        rows.append(row)
    return rows


def test_quality_figure_is_written_for_swept_and_fixed_x(tmp_path):
    for with_batch in (True, False):
        path = quality_figure(tmp_path, _rows(with_batch), x="batch_size", group="method")
        assert path.exists() and path.stat().st_size > 0


def test_the_title_names_what_is_on_the_x_axis(tmp_path, monkeypatch):
    import matplotlib.figure

    titles = []
    original = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.figure.Figure, "suptitle", lambda fig, t, **k: titles.append(t) or original(fig, t, **k)
    )
    for with_batch in (True, False):
        quality_figure(tmp_path, _rows(with_batch), x="batch_size", group="method", title="Quality vs {x}")
    assert titles == ["Quality vs batch_size", "Quality vs method"]


def test_a_swept_value_of_0_puts_x_on_a_categorical_axis_where_a_log_axis_would_drop_it(tmp_path, monkeypatch):
    import matplotlib.axes

    scales = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xscale", lambda ax, *a, **k: scales.append(a))
    rows = [{"job": str(i), "tv_lambda": v, "recon/psnr": 20.0, "recon/ssim": 0.5} for i, v in enumerate((0, 1e-3))]
    quality_figure(tmp_path, rows, x="tv_lambda")
    assert scales == []
    quality_figure(tmp_path, [{**row, "tv_lambda": row["tv_lambda"] + 1e-4} for row in rows], x="tv_lambda")
    assert scales == [("log",), ("log",)]  # one per metric


def test_a_figure_of_many_classes_wraps_into_blocks_each_under_its_titles(tmp_path, monkeypatch):
    from privacy_attacks.engine import figures

    drawn = {}
    monkeypatch.setattr(figures, "_image_grid", lambda path, rows, figsize, **kwargs: drawn.update(rows=rows, **kwargs))
    titles = [f"class {c}" for c in range(45)]
    images = torch.rand(45, 3, 8, 8)
    figures.image_rows_figure(tmp_path / "grid.png", [("inversion", images), ("class mean", images / 2)], titles)
    labels = [label for label, _ in drawn["rows"]]
    assert labels == ["inversion", "class mean", "", "inversion", "class mean", "", "inversion", "class mean"]
    assert [len(row) for _, row in drawn["rows"]] == [20, 20, 0, 20, 20, 0, 5, 5]
    assert [(row, list(block)) for row, block in drawn["titled_rows"]] == [
        (0, titles[:20]),
        (3, titles[20:40]),
        (6, titles[40:]),
    ]
    assert torch.equal(drawn["rows"][4][1], images[20:40] / 2)  # each block's classes, row by row
