"""What the dashboard's pages are made of: the experiments list, an experiment's tabs, the
leaderboard's rows, the trial view and the messages, as Dash components built from the data
layer's frames (no callbacks here: app.py wires them)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml
from dash import dash_table, dcc, html

from emseg_search.dashboard import data, figures
from emseg_search.dashboard.data import DIMENSIONS, ResultsError
from emseg_search.results.io import format_change

PAGE_SIZE = 25


# parallel coordinates draw the best this many trials unless asked for all: WebGL lines, and a
# browser without a GPU takes ~3 s for 1,000 of them
PARALLEL_LINES = 200


CURVE_METRICS = (
    "val_iou",
    "val_dice",
    "val_robust_iou",
    "val_score",
    "val_particle_f1",
    "val_panoptic_quality",
    "val_count_error",
    "val_precision",
    "val_recall",
    "train_loss",
    "lr",
)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:.4em 1.2em;display:flex;gap:1.5em;align-items:center}
header>a{color:#fff;text-decoration:none;font-weight:600;font-size:1.1em}
header>span{color:#b0bec5;font-size:.85em}
main{padding:.6em 1.2em 2em}
h2{margin:.3em 0 .1em} h3{margin:.8em 0 .3em}
.msg{background:#fff4d6;border-left:4px solid #e0a800;padding:.5em .8em;margin:.5em 0}
.err{background:#fde8e8;border-left:4px solid #c62828;padding:.5em .8em;margin:.5em 0}
.note{color:#555;font-size:.85em}
.filters{display:flex;gap:.6em;flex-wrap:wrap;align-items:end;margin:.4em 0}
.filters>div{min-width:170px}
.filters label{font-size:.8em;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:.8em;margin-top:.8em}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:4px;padding:.4em}
.kv td{padding:.1em .8em .1em 0;font-size:.9em;vertical-align:top}
.kv td:first-child{color:#555}
pre{background:#f4f4f4;padding:.6em;font-size:.8em;overflow-x:auto;max-height:420px}
.panels img{max-width:min(100%,1000px);border:1px solid #ddd;margin:.3em 0;display:block}
.status-error{color:#c62828;font-weight:600}
.dash-filter--case{display:none}
pre.config{column-count:3;column-gap:2em;max-height:none}
@media (max-width:900px){pre.config{column-count:1}}
.dash-spreadsheet td,.dash-spreadsheet th{font-family:system-ui,-apple-system,Segoe UI,sans-serif}
"""


def error_box(message: str, back: str | None = None) -> html.Div:
    """A red message box, with a link back when ``back`` is given."""
    children: list[Any] = [message]
    if back:
        children += [" ", html.A("back to the experiments", href=back)]
    return html.Div(children, className="err")


def home_layout() -> html.Div:
    """The experiments list and the comparison of the selected ones."""
    columns = [
        {"id": "experiment", "name": "experiment", "presentation": "markdown"},
        {"id": "status", "name": "status"},
        {"id": "trials", "name": "trials done/total"},
        {"id": "best_iou", "name": "best val IoU", "type": "numeric"},
        {"id": "started", "name": "started (UTC)"},
        {"id": "wall_time", "name": "wall time"},
        {"id": "message", "name": "note"},
    ]
    return html.Div(
        [
            html.H2("Experiments"),
            html.Div(id="home-msg"),
            dash_table.DataTable(
                id="experiments",
                columns=columns,
                data=[],
                row_selectable="multi",
                sort_action="native",
                markdown_options={"link_target": "_self"},
                style_cell={
                    "textAlign": "left",
                    "padding": "4px 8px",
                    "fontSize": 14,
                    "whiteSpace": "normal",
                    "height": "auto",
                    "maxWidth": 520,
                },
                style_header={"fontWeight": "600", "background": "#eceff1"},
                style_data_conditional=[
                    {"if": {"filter_query": '{status} = "unreadable"'}, "color": "#c62828"}
                ],
            ),
            html.P(
                "Tick two or more experiments to compare them; click a name to open it.",
                className="note",
            ),
            html.Div(id="compare"),
        ]
    )


def round_or_none(value: Any, digits: int = 4) -> Any:
    """``value`` rounded for a table cell; None for NaN; non-numbers as they are."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return None if math.isnan(f) else round(f, digits)


def experiment_layout(name: str, trial: str | None, view: str) -> html.Div:
    """One experiment: leaderboard and charts (overview tab) and the trial view (trial tab)."""

    def dropdown(column: str, label: str) -> html.Div:
        """A labelled multi-select filter for ``column``."""
        return html.Div(
            [html.Label(label), dcc.Dropdown(id=f"f-{column}", multi=True, placeholder="all")]
        )

    filters = html.Div(
        [dropdown(c, label) for c, label in DIMENSIONS.items()]
        + [dropdown("status", "status")]
        + [html.Div(id="lb-count", className="note")],
        className="filters",
    )
    overview = html.Div(
        [
            dash_table.DataTable(
                id="leaderboard",
                data=[],
                columns=[],
                row_selectable="multi",
                selected_row_ids=[],
                sort_action="native",
                filter_action="native",
                filter_options={"placeholder_text": "filter", "case": "insensitive"},
                page_action="native",
                page_size=PAGE_SIZE,
                tooltip_delay=300,
                style_table={"overflowX": "auto"},
                style_cell={
                    "padding": "3px 6px",
                    "fontSize": 13,
                    "maxWidth": 260,
                    "overflow": "hidden",
                    "textOverflow": "ellipsis",
                },
                style_header={
                    "fontWeight": "600",
                    "background": "#eceff1",
                    "whiteSpace": "normal",
                    "height": "auto",
                },
            ),
            html.Div(
                [
                    html.Span(id="focus-text"),
                    html.Button("open trial view", id="open-trial", n_clicks=0),
                ],
                style={"display": "flex", "gap": "1em", "alignItems": "center", "margin": ".4em 0"},
            ),
            html.Div(
                [
                    _card(
                        "g-bsf",
                        dcc.RadioItems(
                            id="bsf-x",
                            options=[
                                {"label": "against trial", "value": "order"},
                                {"label": "against compute", "value": "compute_s"},
                            ],
                            value="order",
                            inline=True,
                        ),
                    ),
                    _card(
                        "g-curves",
                        dcc.Dropdown(
                            id="curve-metric",
                            options=list(CURVE_METRICS),
                            value="val_iou",
                            clearable=False,
                            style={"width": "220px"},
                        ),
                    ),
                    _card("g-dist"),
                    html.Div(
                        _card(
                            "g-pareto",
                            dcc.Dropdown(
                                id="pareto-y",
                                placeholder="against (second objective)",
                                clearable=False,
                                style={"width": "320px"},
                            ),
                        ),
                        id="pareto-box",
                    ),
                ],
                className="grid",
            ),
            html.Div(id="final-box"),
        ]
    )
    parameters = html.Div(
        [
            html.Div(
                _card(
                    "g-parallel",
                    html.Div(
                        [
                            dcc.Dropdown(
                                id="pc-arch",
                                placeholder="all architectures (shared parameters)",
                                style={"width": "320px"},
                            ),
                            dcc.RadioItems(
                                id="pc-lines",
                                options=[
                                    {"label": f"best {PARALLEL_LINES}", "value": "best"},
                                    {"label": "all trials", "value": "all"},
                                ],
                                value="best",
                                inline=True,
                            ),
                        ],
                        style={"display": "flex", "gap": "1em", "alignItems": "center"},
                    ),
                ),
                style={"gridColumn": "1 / -1"},  # the full width: one axis per parameter
            ),
            _card("g-importance", html.Div(id="importance-note", className="note")),
        ],
        className="grid",
    )
    return html.Div(
        [
            dcc.Store(id="exp", data=name),
            dcc.Store(id="sel", data={"focus": trial, "ids": []}),
            html.H2(name, id="exp-title"),
            html.Div(id="exp-summary", className="note"),
            html.Div(id="exp-msg"),
            filters,
            dcc.Tabs(
                id="tabs",
                value=view if view in ("trial", "parameters") else "overview",
                children=[
                    dcc.Tab(label="Overview", value="overview", children=overview),
                    dcc.Tab(label="Parameters", value="parameters", children=parameters),
                    dcc.Tab(
                        label=f"Trial {trial}" if trial else "Trial (the best)",
                        value="trial",
                        id="trial-tab",
                        children=html.Div(id="trial-view", style={"padding": ".5em 0"}),
                    ),
                ],
            ),
        ]
    )


def _card(graph_id: str, *controls: Any) -> html.Div:
    return html.Div(
        [*controls, dcc.Graph(id=graph_id, config={"displaylogo": False})], className="card"
    )


def leaderboard_table(exp: data.Experiment, trials: pd.DataFrame) -> tuple[list, list, dict]:
    """Columns, rows and header tooltips of the leaderboard, best score first."""
    extra = data.extra_scores(exp.trials)
    params = [p for p in exp.params if p not in DIMENSIONS]
    cols: list[tuple[str, str, str]] = [  # (id, header, type)
        ("rank", "#", "numeric"),
        ("trial_id", "trial", "text"),
        ("status", "status", "text"),
        *((c, c, "text") for c in DIMENSIONS),
        *((f"params_{p}", p, "any") for p in params),
        ("best_val_iou", "val IoU · best epoch", "numeric"),
        ("last_val_iou", "val IoU · last epoch", "numeric"),
        ("best_val_dice", "val Dice · best epoch", "numeric"),
        *(
            (c, label if "·" in label else f"{label} · best epoch", "numeric")
            for c, label in extra.items()
        ),
        *([("pareto", "Pareto", "text")] if data.declared_objectives(exp.info) else []),
        ("best_epoch", "best epoch", "numeric"),
        ("epochs_run", "epochs run", "numeric"),
        ("train_seconds", "train s", "numeric"),
        ("error", "error", "text"),
    ]
    ranked = trials.sort_values("score", ascending=False, na_position="last")
    ranked = ranked.assign(pareto=ranked["pareto"].map({True: "yes", False: ""}))
    frame = pd.DataFrame({"id": ranked["trial_id"].astype(str)})
    frame["rank"] = range(1, len(ranked) + 1)
    for cid, _, _ in cols[1:]:
        col = ranked[cid]
        if pd.api.types.is_float_dtype(col):
            col = col.astype(float).round(6 if cid.startswith("params_") else 4)
        frame[cid] = col.to_numpy()
    frame["train_seconds"] = pd.to_numeric(frame["train_seconds"]).round(1)
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    columns = [{"id": c, "name": h, "type": t} for c, h, t in cols]
    tooltips = {
        "best_val_iou": "validation IoU of the trial's best epoch (by the selection score)",
        "last_val_iou": "validation IoU of the trial's last reported epoch",
        "best_val_dice": "Dice of the best epoch",
        "rank": "rank by the selection score (best_val_score, else best_val_iou)",
        "pareto": "no completed trial is as good on every objective of the search and better "
        "on one",
    }
    return columns, rows, tooltips


def describe_error(exc: BaseException) -> str:
    """What a chart says when its data could not be loaded."""
    if isinstance(exc, ResultsError):
        return "nothing to show: see the message above"
    return f"cannot show this ({type(exc).__name__}: {exc}); see the server's log"


def final_table(final: pd.DataFrame) -> Any:
    """The held-out (`final`) scores per architecture and metric, with intervals."""
    rows = []
    for _, r in final[final["kind"] == "architecture"].iterrows():
        rows.append(
            {
                "architecture": r["arch"],
                "metric": r["metric"],
                "estimate [95 % CI]": (
                    f"{r['estimate']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
                ),
                "seeds": r.get("n_seeds"),
                "images / groups": f"{r.get('n_images')} / {r.get('n_groups')}",
                "retrained trial": r.get("trial_id"),
            }
        )
    if not rows:
        return None
    return dash_table.DataTable(
        columns=[{"id": c, "name": c} for c in rows[0]],
        data=rows,
        style_cell={"textAlign": "left", "padding": "3px 8px", "fontSize": 13},
        style_header={"fontWeight": "600", "background": "#eceff1"},
    )


def robustness_view(summary: pd.DataFrame) -> Any:
    """`final --shifts` on the held-out test images: the chart of each shift's IoU change with
    its interval, and a table per shift (IoU, particle F1, the change with its 95 % interval
    and the median image's change, per architecture) ending in the robustness score."""
    rows = []
    archs = list(dict.fromkeys(summary["arch"]))
    for shift, kind in dict.fromkeys(zip(summary["shift"], summary["kind"], strict=True)):
        row: dict[str, Any] = {"shift": shift, "kind": kind}
        for arch in archs:
            t = summary[(summary["arch"] == arch) & (summary["shift"] == shift)]
            r = t.iloc[0] if len(t) else None
            row[f"{arch} IoU"] = _fmt(None if r is None else float(r["iou"]))
            row[f"{arch} F1"] = _fmt(None if r is None else float(r["particle_f1"]))
            row[f"{arch} IoU change [95 %]"] = "" if r is None else format_change(r, median=True)
        rows.append(row)
    from emseg_search.inference.robustness import robustness_score

    score: dict[str, Any] = {"shift": "robustness score (mean of all but none)", "kind": ""}
    for arch in archs:
        mine = robustness_score(summary[summary["arch"] == arch])
        score[f"{arch} IoU"] = _fmt(mine["robustness_iou"])
        score[f"{arch} F1"] = _fmt(mine["robustness_f1"])
        score[f"{arch} IoU change [95 %]"] = ""
    rows.append(score)
    none = summary[summary["shift"] == "none"]
    images = int(none["images"].max()) if len(none) else 0
    seeds = int(summary["seeds"].max()) if len(summary) else 0
    return html.Div(
        [
            html.H3("Robustness of the final runs (held-out test images under shifts)"),
            html.P(
                f"{images} test images under each shift, {seeds} seed(s) pooled per "
                "architecture; each change against none has a 95 % interval paired over the "
                "images (an interval across 0 is a change these images cannot show; the band "
                "is the goal of +-0.03). Synthetic domains are other images: no change. "
                "docs/robustness.md says what each shift is.",
                className="note",
            ),
            dcc.Graph(
                id="g-shifts",
                figure=figures.shift_changes(summary),
                config={"displaylogo": False},
            ),
            dash_table.DataTable(
                id="robustness-table",
                columns=[{"id": c, "name": c} for c in rows[0]],
                data=rows,
                style_table={"overflowX": "auto"},
                style_cell={"textAlign": "left", "padding": "3px 8px", "fontSize": 13},
                style_header={"fontWeight": "600", "background": "#eceff1"},
            ),
        ]
    )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _shift_rows(exp: data.Experiment, focus: str) -> list[tuple[str, str]]:
    """('val IoU under scale_x2 · best epoch', '0.8123') for each of the space's val_shifts
    that the trial's best epoch was scored under (none without val_shifts)."""
    from emseg_search.results.io import best_epoch_shift_ious

    # only this trial's rows: the view renders on every click, over up to 1,000s of trials
    trials, epochs = exp.trials, exp.epochs
    shifts = best_epoch_shift_ious(
        trials[trials["trial_id"] == focus], epochs[epochs["trial_id"] == focus]
    )
    if focus not in shifts.index:
        return []
    return [
        (f"val IoU under {name} · best epoch", _fmt(iou))
        for name, iou in shifts.loc[focus].items()
        if pd.notna(iou)
    ]


def trial_view(exp: data.Experiment, focus: str | None) -> Any:
    """Everything about one trial (default: the best): numbers, curves, status or error,
    resolved config, checkpoint and model paths, and the report's prediction panels."""
    t = exp.trials
    if not len(t):
        return html.Div("no trial yet", className="msg")
    if focus is None or focus not in set(t["trial_id"]):
        ranked = t.sort_values("score", ascending=False, na_position="last")
        focus = str(ranked["trial_id"].iloc[0])
        note = html.P(f"No trial selected: showing the best, {focus}.", className="note")
    else:
        note = None
    row = t[t["trial_id"] == focus].iloc[0]
    rank = int((t["score"] > row["score"]).sum()) + 1 if pd.notna(row["score"]) else None
    numbers = [
        ("status", html.Span(row["status"], className=f"status-{row['status']}")),
        ("rank", f"{rank} of {len(t)}" if rank else "—"),
        ("architecture / encoder", f"{row['arch']} / {row['encoder']}"),
        ("loss / augment", f"{row['loss']} / {row['augment']}"),
        ("val IoU · best epoch", f"{_fmt(row['best_val_iou'])} (epoch {_fmt(row['best_epoch'])})"),
        ("val IoU · last epoch", _fmt(row["last_val_iou"])),
        ("val Dice · best epoch", _fmt(row["best_val_dice"])),
        *(
            (label if "·" in label else f"{label} · best epoch", _fmt(row[c]))
            for c, label in data.extra_scores(t).items()
        ),
        *_shift_rows(exp, focus),
        ("epochs run", _fmt(row["epochs_run"])),
        (
            "training time",
            data.format_seconds(float(row["train_seconds"]))
            if pd.notna(row["train_seconds"])
            else "—",
        ),
    ]
    files = data.trial_files(exp, focus)
    model_dir = row.get("model_dir")
    paths = [
        (
            "model",
            str(model_dir)
            if isinstance(model_dir, str) and model_dir
            else ", ".join(str(exp.path / p) for p in files["model"]) or "—",
        ),
        (
            "checkpoints",
            html.Div([html.Div(str(exp.path / p)) for p in files["checkpoints"]])
            if files["checkpoints"]
            else "—",
        ),
        ("experiment folder", str(exp.path)),
    ]
    children: list[Any] = [
        note,
        html.H3(f"Trial {focus}", id="trial-title"),
    ]
    if isinstance(row.get("error"), str) and row["error"]:
        children.append(html.Div(["error: ", html.Code(row["error"])], className="err"))
    children.append(
        html.Div(
            [
                html.Div(
                    [
                        html.Table(
                            [html.Tr([html.Td(k), html.Td(v)]) for k, v in numbers], className="kv"
                        ),
                        html.H3("Files"),
                        html.Table(
                            [html.Tr([html.Td(k), html.Td(v)]) for k, v in paths], className="kv"
                        ),
                    ],
                    className="card",
                ),
                html.Div(
                    dcc.Graph(id="g-trial", figure=figures.trial_curves(exp.epochs, focus)),
                    className="card",
                ),
            ],
            className="grid",
        )
    )
    if exp.final is not None and len(exp.final) and "trial_id" in exp.final:
        mine = exp.final[(exp.final["kind"] == "architecture") & (exp.final["trial_id"] == focus)]
        if len(mine):
            children += [html.H3("Held-out test scores of its retrained runs"), final_table(mine)]
    config = data.resolved_config(exp, focus)
    children += [
        html.H3("Resolved configuration"),
        html.Pre(
            yaml.safe_dump(config, sort_keys=True, default_flow_style=False) or "—",
            className="config",
        ),
    ]
    if files["panels"]:
        children += [
            html.H3("Prediction panels from the experiment's report"),
            html.P(
                [
                    "The report compares each architecture's best model on the images where "
                    "they differ most. ",
                    html.A(
                        "open the report",
                        href=f"/files/{exp.name}/report/index.html",
                        target="_blank",
                    ),
                ],
                className="note",
            ),
            html.Div(
                [html.Img(src=f"/files/{exp.name}/{p}", alt=p) for p in files["panels"]],
                className="panels",
            ),
        ]
    return html.Div(children)
