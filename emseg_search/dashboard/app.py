"""The Dash app: pages, callbacks, the read-only file route and the path guard.

Pages: ``/`` lists the experiments under the results folder (select two or more to compare
them); ``/e/<name>`` is one experiment (leaderboard, charts, and a trial view; ``?trial=<id>``
selects a trial, ``&view=trial`` opens its view). A ``dcc.Interval`` polls the tables' stat()
signature; only a change rereads the table that changed (data.TableCache), and only then do the
charts redraw. Every asset is served by the app (Dash serves its own bundles; no CDN).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import pandas as pd
import yaml
from dash import Dash, Input, Output, State, ctx, dash_table, dcc, html, set_props
from dash.exceptions import PreventUpdate
from flask import Response, abort, request, send_file

from emseg_search.dashboard import data, figures
from emseg_search.dashboard.data import DIMENSIONS, ResultsError, TableCache

log = logging.getLogger(__name__)

POLL_MS = 2000
PAGE_SIZE = 25
MAX_CURVES = 10
# parallel coordinates draw the best this many trials unless asked for all: WebGL lines, and a
# browser without a GPU takes ~3 s for 1,000 of them
PARALLEL_LINES = 200
# files the /files/ route serves from the results folder (report pages and their pictures)
SERVED_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".html"}
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


def build_app(results_dir: str | Path, poll_ms: int = POLL_MS) -> Dash:
    """The dashboard over ``results_dir`` (read-only); ``app.server`` is its Flask app."""
    root = Path(results_dir).resolve()
    cache = TableCache()
    memo = _Memo()
    app = Dash(
        __name__,
        title="emseg-search results",
        update_title=None,
        serve_locally=True,
        suppress_callback_exceptions=True,
        on_error=_on_error,
    )
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    _guard(app, root)
    app.layout = html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            html.Header(
                [
                    dcc.Link("emseg-search results", href="/"),
                    html.Span(str(root), id="root"),
                    dcc.Dropdown(
                        id="switch",
                        placeholder="open an experiment",
                        clearable=False,
                        style={"width": "320px", "color": "#222"},
                    ),
                ]
            ),
            html.Div(id="global-error"),
            html.Main(id="page"),
        ]
    )
    _page_callbacks(app, root, poll_ms)
    _home_callbacks(app, root, cache)
    _experiment_callbacks(app, root, cache, memo)
    return app


def _on_error(exc: Exception) -> None:
    """Any exception a callback did not handle: logged with its traceback on the server, one
    line on the page (the callback's outputs stay as they were)."""
    log.error("a callback failed", exc_info=exc)
    set_props(
        "global-error",
        {
            "children": html.Div(
                f"Part of this page could not be shown ({type(exc).__name__}: {exc}); the "
                "server's log has the details.",
                className="err",
            )
        },
    )


class _Memo:
    """Results derived from one version of an experiment's tables (importances: seconds on a
    large search), recomputed only when the tables change."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], compute: Any) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
        value = compute()
        with self._lock:
            if len(self._values) > 64:
                self._values.clear()
            self._values[key] = value
        return value


def _guard(app: Dash, root: Path) -> None:
    """Refuse any request whose path holds a '..' segment (raw or percent-encoded), and serve
    /files/<experiment>/<path> from inside the results folder only."""
    server = app.server

    @server.before_request
    def refuse_traversal() -> Response | None:
        raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
        for candidate in (raw.split("?", 1)[0], request.path):
            text = candidate
            for _ in range(3):  # %252e%252e decodes twice
                text = unquote(text)
            parts = text.replace("\\", "/").split("/")
            if ".." in parts or "" in parts[1:-1]:  # '..', or '//' (an absolute path after it)
                return Response(
                    "refused: '..' or '//' in the path\n", status=400, mimetype="text/plain"
                )
        return None

    @server.route("/files/<path:relative>")
    def serve_file(relative: str) -> Response:
        try:
            path = data.resolve_inside(root, relative)
        except ResultsError:
            abort(404)
        if not path.is_file() or path.suffix.lower() not in SERVED_SUFFIXES:
            abort(404)
        return send_file(path, max_age=0)


# ---------------------------------------------------------------- pages and polling


def _page_callbacks(app: Dash, root: Path, poll_ms: int) -> None:
    def live(scope: str) -> list[Any]:
        """The page's poller: its version is the stat() signature of the tables it shows (set
        here, so that the page's first render is not followed by a second one)."""
        return [
            dcc.Store(id="scope", data=scope),
            dcc.Store(id="version", data=_version(root, scope)),
            dcc.Interval(id="poll", interval=poll_ms),
        ]

    @app.callback(
        Output("page", "children"),
        Output("global-error", "children"),
        Input("url", "pathname"),
        State("url", "search"),
    )
    def route(pathname: str | None, search: str | None) -> tuple[Any, None]:
        return _route(pathname or "/", search), None  # a new page clears an old error

    def _route(pathname: str, search: str | None) -> Any:
        if pathname in ("/", ""):
            return [*live(""), home_layout()]
        if pathname.startswith("/e/"):
            name = unquote(pathname[3:].strip("/"))
            query = parse_qs((search or "").lstrip("?"))
            try:
                data.experiment_dir(root, name)
            except ResultsError as exc:
                return _error(str(exc), "/")
            return [
                *live(name),
                experiment_layout(
                    name, query.get("trial", [None])[0], query.get("view", ["overview"])[0]
                ),
            ]
        return _error(f"no page {pathname}", "/")

    @app.callback(
        Output("version", "data"),
        Input("poll", "n_intervals"),
        State("scope", "data"),
        State("version", "data"),
        # else its first (unchanged) answer keeps Dash from calling the page's callbacks
        prevent_initial_call=True,
    )
    def poll(_: Any, scope: str, current: str | None) -> str:
        version = _version(root, scope)
        if version == current:
            raise PreventUpdate
        return version

    @app.callback(
        Output("switch", "options"),
        Output("switch", "value"),
        Input("url", "pathname"),
    )
    def switcher(pathname: str | None) -> tuple[list[str], str | None]:
        names = [p.name for p in data.list_experiment_dirs(root)]
        current = (
            unquote((pathname or "/")[3:].strip("/"))
            if (pathname or "").startswith("/e/")
            else None
        )
        return names, current if current in names else None

    @app.callback(
        Output("url", "pathname"),
        Output("url", "search"),
        Input("switch", "value"),
        State("url", "pathname"),
        prevent_initial_call=True,
    )
    def switch(name: str | None, pathname: str | None) -> tuple[str, str]:
        if not name or pathname == f"/e/{name}":
            raise PreventUpdate
        return f"/e/{name}", ""


def _version(root: Path, scope: str) -> str:
    """The signature of experiment ``scope``'s tables, of every experiment's for ""."""
    try:
        return data.signature(root, [scope] if scope else None)
    except OSError as exc:
        return f"error {exc}"


def _error(message: str, back: str | None = None) -> html.Div:
    children: list[Any] = [message]
    if back:
        children += [" ", html.A("back to the experiments", href=back)]
    return html.Div(children, className="err")


# ---------------------------------------------------------------- experiments list


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
                },  # fmt: skip
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


def _home_callbacks(app: Dash, root: Path, cache: TableCache) -> None:
    @app.callback(
        Output("experiments", "data"),
        Output("home-msg", "children"),
        Input("version", "data"),
    )
    def experiments(_: Any) -> tuple[list[dict[str, Any]], Any]:
        if not root.is_dir():
            return [], _error(f"{root}: no such folder")
        names = [p.name for p in data.list_experiment_dirs(root)]
        if not names:
            return [], html.Div(
                f"No experiment in {root} yet. Start a search (python -m emseg_search.run ...) "
                "and it appears here by itself.",
                className="msg",
            )
        rows = []
        for name in names:
            row = data.summary(root, name, cache)
            row["id"] = name
            label = re.sub(r"([\\`*_{}\[\]()#+!<>|-])", r"\\\1", name)  # markdown-escaped
            row["experiment"] = f"[{label}](/e/{quote(name)})"
            rows.append(row)
        return rows, None

    @app.callback(
        Output("compare", "children"),
        Input("experiments", "selected_row_ids"),
        Input("version", "data"),
    )
    def compare(selected: list[str] | None, _: Any) -> Any:
        if not selected or len(selected) < 2:
            return None
        frames, bsf, rows, problems = [], {}, [], []
        for name in selected:
            try:
                exp = data.load(root, name, cache)
            except ResultsError as exc:
                problems.append(str(exc))
                continue
            t = exp.trials.assign(experiment=name)
            frames.append(t)
            bsf[name] = data.best_so_far(exp.trials, exp.epochs)
            for arch, g in t.groupby(t["arch"].astype(str)):
                best = g.loc[g["score"].idxmax()] if g["score"].notna().any() else None
                rows.append(
                    {
                        "experiment": name,
                        "architecture": arch,
                        "trials": len(g),
                        "best val IoU": _round(g["best_val_iou"].max()),
                        "median val IoU": _round(g["best_val_iou"].median()),
                        "best trial": None if best is None else best["trial_id"],
                        "pruned": int((g["status"] == "pruned").sum()),
                        "errors": int((g["status"] == "error").sum()),
                    }
                )
        if not frames:
            return _error("; ".join(problems))
        trials = pd.concat(frames, ignore_index=True)
        return html.Div(
            [
                html.H3(f"Comparison of {', '.join(selected)}"),
                *[html.Div(p, className="err") for p in problems],
                dash_table.DataTable(
                    columns=[{"id": c, "name": c} for c in rows[0]] if rows else [],
                    data=rows,
                    sort_action="native",
                    style_cell={"textAlign": "left", "padding": "3px 8px", "fontSize": 13},
                    style_header={"fontWeight": "600", "background": "#eceff1"},
                ),
                html.Div(
                    [
                        html.Div(
                            dcc.Graph(figure=figures.compare_distribution(trials)), className="card"
                        ),  # fmt: skip
                        html.Div(
                            dcc.Graph(figure=figures.compare_best_so_far(bsf)), className="card"
                        ),  # fmt: skip
                    ],
                    className="grid",
                ),
            ]
        )


def _round(value: Any, digits: int = 4) -> Any:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return None if math.isnan(f) else round(f, digits)


# ---------------------------------------------------------------- one experiment


def experiment_layout(name: str, trial: str | None, view: str) -> html.Div:
    """One experiment: leaderboard and charts (overview tab) and the trial view (trial tab)."""

    def dropdown(column: str, label: str) -> html.Div:
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
                },  # fmt: skip
                style_header={
                    "fontWeight": "600",
                    "background": "#eceff1",
                    "whiteSpace": "normal",
                    "height": "auto",
                },  # fmt: skip
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
                    html.Div(_card("g-pareto"), id="pareto-box"),
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


def _filters(values: tuple[Any, ...]) -> dict[str, list[str] | None]:
    return dict(zip([*DIMENSIONS, "status"], values, strict=True))


FILTER_INPUTS = [Input(f"f-{c}", "value") for c in [*DIMENSIONS, "status"]]


def _leaderboard(exp: data.Experiment, trials: pd.DataFrame) -> tuple[list, list, dict]:
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
        ),  # fmt: skip
        ("best_epoch", "best epoch", "numeric"),
        ("epochs_run", "epochs run", "numeric"),
        ("train_seconds", "train s", "numeric"),
        ("error", "error", "text"),
    ]
    ranked = trials.sort_values("score", ascending=False, na_position="last")
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
    }
    return columns, rows, tooltips


def _load(root: Path, cache: TableCache, name: str) -> data.Experiment:
    return data.load(root, name, cache)


def _experiment_callbacks(app: Dash, root: Path, cache: TableCache, memo: _Memo) -> None:
    @app.callback(
        Output("leaderboard", "data"),
        Output("leaderboard", "columns"),
        Output("leaderboard", "tooltip_header"),
        *[Output(f"f-{c}", "options") for c in [*DIMENSIONS, "status"]],
        Output("lb-count", "children"),
        Output("exp-msg", "children"),
        Output("exp-summary", "children"),
        Input("version", "data"),
        *FILTER_INPUTS,
        State("exp", "data"),
    )
    def table(_: Any, *args: Any) -> tuple[Any, ...]:
        *values, name = args
        try:
            exp = _load(root, cache, name)
        except Exception as exc:  # a message on the page, never a traceback
            if not isinstance(exc, ResultsError):
                log.exception("leaderboard of %s", name)
            message = html.Div(str(exc) if isinstance(exc, ResultsError) else _text(exc),
                               className="err")  # fmt: skip
            return ([], [], {}, *[[] for _ in range(len(DIMENSIONS) + 1)], "", message, "")
        t = exp.trials
        shown = data.filter_trials(t, _filters(tuple(values)))
        columns, rows, tips = _leaderboard(exp, shown)
        options = []
        for c in [*DIMENSIONS, "status"]:
            present = sorted(t[c].dropna().astype(str).unique())
            options.append([{"label": v, "value": v} for v in present])
        space = exp.info.get("space") or {}
        counts = ", ".join(f"{k} {v}" for k, v in t["status"].value_counts().items())
        best = t["best_val_iou"].max()
        summary = [
            f"{len(t)} trials ({counts})",
            f"best val IoU {best:.4f}" if pd.notna(best) else "",
            f"data {exp.info.get('data')}" if exp.info.get("data") else "",
            space.get("description") or "",
        ]
        messages = [html.Div(w, className="msg") for w in exp.warnings]
        return (
            rows,
            columns,
            tips,
            *options,
            f"{len(shown)} of {len(t)} trials shown",
            messages or None,
            " · ".join(s for s in summary if s),
        )

    @app.callback(
        Output("sel", "data"),
        Input("g-bsf", "clickData"),
        Input("g-dist", "clickData"),
        Input("g-pareto", "clickData"),
        Input("g-curves", "clickData"),
        Input("leaderboard", "active_cell"),
        Input("leaderboard", "selected_row_ids"),
        State("sel", "data"),
        # the page starts with the selection from its address: the charts need not wait for this
        prevent_initial_call=True,
    )
    def select(*args: Any) -> dict[str, Any]:
        *_, current = args
        sel = dict(current or {"focus": None, "ids": []})
        trigger = ctx.triggered_id
        if trigger == "leaderboard" and ctx.triggered[0]["prop_id"].endswith("selected_row_ids"):
            sel["ids"] = list(ctx.triggered[0]["value"] or [])[:MAX_CURVES]
            return sel
        value = ctx.triggered[0]["value"] if ctx.triggered else None
        if trigger == "leaderboard":
            focus = (value or {}).get("row_id")
        else:
            points = (value or {}).get("points") or []
            focus = points[0].get("customdata") if points else None
            if isinstance(focus, list):
                focus = focus[0] if focus else None
        if not focus:
            raise PreventUpdate
        sel["focus"] = str(focus)
        return sel

    @app.callback(
        Output("leaderboard", "style_data_conditional"),
        Output("focus-text", "children"),
        Input("sel", "data"),
    )
    def highlight(sel: dict[str, Any] | None) -> tuple[Any, ...]:
        focus = (sel or {}).get("focus")
        styles = [
            {
                "if": {"filter_query": '{status} = "error"', "column_id": "status"},
                "color": "#c62828",
                "fontWeight": "600",
            },  # fmt: skip
            {
                "if": {"filter_query": '{status} = "running"', "column_id": "status"},
                "color": "#1565c0",
                "fontWeight": "600",
            },  # fmt: skip
        ]
        if not focus:
            return styles, "Click a point or a row to select a trial."
        styles.append(
            {"if": {"filter_query": f'{{trial_id}} = "{focus}"'}, "backgroundColor": "#fff3c4"}
        )
        return styles, f"Selected trial {focus}."

    @app.callback(Output("trial-tab", "label"), Input("sel", "data"), prevent_initial_call=True)
    def tab_label(sel: dict[str, Any] | None) -> str:
        focus = (sel or {}).get("focus")
        return f"Trial {focus}" if focus else "Trial (the best)"

    @app.callback(
        Output("tabs", "value"),
        Input("open-trial", "n_clicks"),
        prevent_initial_call=True,
    )
    def open_trial(_: int) -> str:
        return "trial"

    @app.callback(
        Output("g-bsf", "figure"),
        Output("g-dist", "figure"),
        Output("g-pareto", "figure"),
        Output("pareto-box", "style"),
        Input("version", "data"),
        *FILTER_INPUTS,
        Input("sel", "data"),
        Input("bsf-x", "value"),
        State("exp", "data"),
    )
    def charts(_: Any, *args: Any) -> tuple[Any, ...]:
        *values, sel, x, name = args
        focus = (sel or {}).get("focus")
        try:
            exp = _load(root, cache, name)
            shown = data.filter_trials(exp.trials, _filters(tuple(values)))
            bsf = data.best_so_far(shown, exp.epochs)
            objectives = data.objectives(exp.trials)
            has_pareto = len(objectives) >= 2
            return (
                figures.best_so_far(bsf, shown, x or "order", focus),
                figures.distribution(shown, focus),
                figures.pareto(shown, objectives, focus) if has_pareto else figures.empty(""),
                None if has_pareto else {"display": "none"},
            )
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("charts of %s", name)
            blank = figures.empty(_text(exc))
            return blank, blank, blank, {"display": "none"}

    @app.callback(
        Output("g-parallel", "figure"),
        Output("pc-arch", "options"),
        Input("version", "data"),
        *FILTER_INPUTS,
        Input("sel", "data"),
        Input("pc-arch", "value"),
        Input("pc-lines", "value"),
        Input("tabs", "value"),
        State("exp", "data"),
    )
    def parallel(_: Any, *args: Any) -> tuple[Any, ...]:
        *values, sel, pc_arch, pc_lines, tab, name = args
        if tab != "parameters":  # drawn when its tab opens, not before
            raise PreventUpdate
        try:
            exp = _load(root, cache, name)
            shown = data.filter_trials(exp.trials, _filters(tuple(values)))
            archs = sorted(exp.trials["arch"].dropna().astype(str).unique())
            spec = (exp.info.get("space") or {}).get("parameters") or {}
            log_params = {k for k, v in spec.items() if isinstance(v, dict) and v.get("log")}
            figure = figures.parallel(
                shown,
                exp.params,
                pc_arch if pc_arch in archs else None,
                log_params,
                (sel or {}).get("focus"),
                limit=None if pc_lines == "all" else PARALLEL_LINES,
            )
            return figure, [{"label": a, "value": a} for a in archs] if len(archs) > 1 else []
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("parallel coordinates of %s", name)
            return figures.empty(_text(exc)), []

    @app.callback(
        Output("g-curves", "figure"),
        Input("version", "data"),
        Input("sel", "data"),
        Input("curve-metric", "value"),
        *FILTER_INPUTS,
        State("exp", "data"),
    )
    def curves(_: Any, sel: dict[str, Any] | None, metric: str, *args: Any) -> Any:
        *values, name = args
        try:
            exp = _load(root, cache, name)
            sel = sel or {}
            ids = list(sel.get("ids") or [])
            if sel.get("focus") and sel["focus"] not in ids:
                ids.insert(0, sel["focus"])
            if not ids:  # nothing selected yet: the five best trials shown
                shown = data.filter_trials(exp.trials, _filters(tuple(values)))
                ids = shown.sort_values("score", ascending=False)["trial_id"].head(5).tolist()
            t = exp.trials.set_index("trial_id")
            labels = {i: f"{i} {t.at[i, 'arch']}" if i in t.index else i for i in ids[:MAX_CURVES]}
            return figures.curves(exp.epochs, ids[:MAX_CURVES], metric or "val_iou", labels)
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("curves of %s", name)
            return figures.empty(_text(exc))

    @app.callback(
        Output("g-importance", "figure"),
        Output("importance-note", "children"),
        Input("version", "data"),
        Input("tabs", "value"),
        State("exp", "data"),
    )
    def importance(version: str, tab: str, name: str) -> tuple[Any, str]:
        if tab != "parameters":  # computed when its tab opens (seconds on a large search)
            raise PreventUpdate
        try:
            exp = _load(root, cache, name)
            frame, note = memo.get((name, version or ""), lambda: data.importances(exp))
            return figures.importance(frame, note), note if len(frame) else ""
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("importance of %s", name)
            return figures.empty(_text(exc)), ""

    @app.callback(
        Output("final-box", "children"),
        Input("version", "data"),
        State("exp", "data"),
    )
    def final(_: Any, name: str) -> Any:
        try:
            exp = _load(root, cache, name)
        except Exception:
            return None
        if exp.final is None or not len(exp.final):
            return None
        return html.Div([html.H3("Held-out test scores (final)"), _final_table(exp.final)])

    @app.callback(
        Output("trial-view", "children"),
        Input("version", "data"),
        Input("sel", "data"),
        Input("tabs", "value"),
        State("exp", "data"),
    )
    def trial_view(_: Any, sel: dict[str, Any] | None, tab: str, name: str) -> Any:
        if tab != "trial":
            raise PreventUpdate
        try:
            exp = _load(root, cache, name)
            return _trial_view(exp, (sel or {}).get("focus"))
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("trial view of %s", name)
            return html.Div(str(exc) if isinstance(exc, ResultsError) else _text(exc),
                            className="err")  # fmt: skip


def _text(exc: BaseException) -> str:
    if isinstance(exc, ResultsError):
        return "nothing to show: see the message above"
    return f"cannot show this ({type(exc).__name__}: {exc}); see the server's log"


def _final_table(final: pd.DataFrame) -> Any:
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


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _trial_view(exp: data.Experiment, focus: str | None) -> Any:
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
        ),  # fmt: skip
        ("epochs run", _fmt(row["epochs_run"])),
        (
            "training time",
            data.format_seconds(float(row["train_seconds"]))
            if pd.notna(row["train_seconds"])
            else "—",
        ),  # fmt: skip
    ]
    files = data.trial_files(exp, focus)
    model_dir = row.get("model_dir")
    paths = [
        (
            "model",
            str(model_dir)
            if isinstance(model_dir, str) and model_dir
            else ", ".join(str(exp.path / p) for p in files["model"]) or "—",
        ),  # fmt: skip
        (
            "checkpoints",
            html.Div([html.Div(str(exp.path / p)) for p in files["checkpoints"]])
            if files["checkpoints"]
            else "—",
        ),  # fmt: skip
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
                    ],  # fmt: skip
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
            children += [html.H3("Held-out test scores of its retrained runs"), _final_table(mine)]
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
                    ),  # fmt: skip
                ],
                className="note",
            ),
            html.Div(
                [html.Img(src=f"/files/{exp.name}/{p}", alt=p) for p in files["panels"]],
                className="panels",
            ),
        ]
    return html.Div(children)
