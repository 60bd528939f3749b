"""The Dash app: routing and callbacks (pages.py builds the components, figures.py the charts),
the read-only file route and the path guard.

Pages: ``/`` lists the experiments under the results folder (select two or more to compare
them); ``/e/<name>`` is one experiment (leaderboard, charts, and a trial view; ``?trial=<id>``
selects a trial, ``&view=trial`` opens its view). A ``dcc.Interval`` polls the tables' stat()
signature; only a change rereads the table that changed (data.TableCache), and only then do the
charts redraw. Every asset is served by the app (Dash serves its own bundles; no CDN).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import pandas as pd
from dash import Dash, Input, Output, State, ctx, dash_table, dcc, html, set_props
from dash.exceptions import PreventUpdate
from flask import Response, abort, request, send_file

from emseg_search.dashboard import data, figures, pages
from emseg_search.dashboard.data import DIMENSIONS, ResultsError, TableCache

log = logging.getLogger(__name__)

POLL_MS = 2000
MAX_CURVES = 10
# files the /files/ route serves from the results folder (report pages and their pictures)
SERVED_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".html"}


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
    app.index_string = app.index_string.replace(
        "{%css%}", "{%css%}<style>" + pages.CSS + "</style>"
    )
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
        """The value for ``key``, computing it (outside the lock) on a miss."""
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
        """400 for a path with '..' or '//' in it, before any route sees it."""
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
        """A report file from inside the results folder; 404 for anything else."""
        try:
            path = data.resolve_inside(root, relative)
        except ResultsError:
            abort(404)
        if not path.is_file() or path.suffix.lower() not in SERVED_SUFFIXES:
            abort(404)
        return send_file(path, max_age=0)


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
        """The page for the address: experiments list, one experiment, or a message."""
        return _route(pathname or "/", search), None  # a new page clears an old error

    def _route(pathname: str, search: str | None) -> Any:
        if pathname in ("/", ""):
            return [*live(""), pages.home_layout()]
        if pathname.startswith("/e/"):
            name = unquote(pathname[3:].strip("/"))
            query = parse_qs((search or "").lstrip("?"))
            try:
                data.experiment_dir(root, name)
            except ResultsError as exc:
                return pages.error_box(str(exc), "/")
            return [
                *live(name),
                pages.experiment_layout(
                    name, query.get("trial", [None])[0], query.get("view", ["overview"])[0]
                ),
            ]
        return pages.error_box(f"no page {pathname}", "/")

    @app.callback(
        Output("version", "data"),
        Input("poll", "n_intervals"),
        State("scope", "data"),
        State("version", "data"),
        # else its first (unchanged) answer keeps Dash from calling the page's callbacks
        prevent_initial_call=True,
    )
    def poll(_: Any, scope: str, current: str | None) -> str:
        """A new version when the page's tables changed (stat() only); else no update."""
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
        """The experiments in the header's drop-down, the current one chosen."""
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
        """Open the experiment chosen in the header (in-app, no reload)."""
        if not name or pathname == f"/e/{name}":
            raise PreventUpdate
        return f"/e/{name}", ""


def _version(root: Path, scope: str) -> str:
    """The signature of experiment ``scope``'s tables, of every experiment's for ""."""
    try:
        return data.signature(root, [scope] if scope else None)
    except OSError as exc:
        return f"error {exc}"


def _home_callbacks(app: Dash, root: Path, cache: TableCache) -> None:
    @app.callback(
        Output("experiments", "data"),
        Output("home-msg", "children"),
        Input("version", "data"),
    )
    def experiments(_: Any) -> tuple[list[dict[str, Any]], Any]:
        """One row per experiment, or a message when there is none."""
        if not root.is_dir():
            return [], pages.error_box(f"{root}: no such folder")
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
        """The selected experiments side by side (two or more)."""
        if not selected or len(selected) < 2:
            return None
        frames, bsf, rows, problems, curves = [], {}, [], [], []
        for name in selected:
            try:
                exp = data.load(root, name, cache)
            except ResultsError as exc:
                problems.append(str(exc))
                continue
            t = exp.trials.assign(experiment=name)
            frames.append(t)
            bsf[name] = data.best_so_far(exp.trials, exp.epochs)
            if exp.trials["score"].notna().any():  # the best trial's curve, named after its run
                top = exp.trials.loc[exp.trials["score"].idxmax()]
                e = exp.epochs[exp.epochs["trial_id"] == top["trial_id"]]
                label = name if top["trial_id"] == name else f"{name}: {top['trial_id']}"
                curves.append(e.assign(trial_id=f"{label} ({top['arch']})"))
            for arch, g in t.groupby(t["arch"].astype(str)):
                best = g.loc[g["score"].idxmax()] if g["score"].notna().any() else None
                rows.append(
                    {
                        "experiment": name,
                        "architecture": arch,
                        "trials": len(g),
                        "best val IoU": pages.round_or_none(g["best_val_iou"].max()),
                        "median val IoU": pages.round_or_none(g["best_val_iou"].median()),
                        "best trial": None if best is None else best["trial_id"],
                        "pruned": int((g["status"] == "pruned").sum()),
                        "errors": int((g["status"] == "error").sum()),
                    }
                )
        if not frames:
            return pages.error_box("; ".join(problems))
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
                        ),
                        html.Div(
                            dcc.Graph(figure=figures.compare_best_so_far(bsf)), className="card"
                        ),
                        html.Div(dcc.Graph(figure=_best_curves(curves)), className="card"),
                    ],
                    className="grid",
                ),
            ]
        )


def _best_curves(curves: list[pd.DataFrame]) -> Any:
    """Validation IoU per epoch of each compared experiment's best trial."""
    if not curves:
        return figures.empty("no epoch reported")
    epochs = pd.concat(curves, ignore_index=True)
    names = list(dict.fromkeys(epochs["trial_id"]))
    fig = figures.curves(epochs, names, "val_iou", {})
    fig["layout"]["title"]["text"] = "Learning curves of each experiment's best trial"
    return fig


def _filters(values: tuple[Any, ...]) -> dict[str, list[str] | None]:
    return dict(zip([*DIMENSIONS, "status"], values, strict=True))


FILTER_INPUTS = [Input(f"f-{c}", "value") for c in [*DIMENSIONS, "status"]]


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
        """Leaderboard rows and columns, filter options, counts and messages."""
        *values, name = args
        try:
            exp = _load(root, cache, name)
        except Exception as exc:  # a message on the page, never a traceback
            if not isinstance(exc, ResultsError):
                log.exception("leaderboard of %s", name)
            message = html.Div(
                str(exc) if isinstance(exc, ResultsError) else pages.describe_error(exc),
                className="msg" if isinstance(exc, data.NotStarted) else "err",
            )
            return ([], [], {}, *[[] for _ in range(len(DIMENSIONS) + 1)], "", message, "")
        t = exp.trials
        shown = data.filter_trials(t, _filters(tuple(values)))
        columns, rows, tips = pages.leaderboard_table(exp, shown)
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
        """The selected trial (a click on a point or a row) and the ticked ones."""
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
        """The selected trial highlighted in the leaderboard and named above it."""
        focus = (sel or {}).get("focus")
        styles = [
            {
                "if": {"filter_query": '{status} = "error"', "column_id": "status"},
                "color": "#c62828",
                "fontWeight": "600",
            },
            {
                "if": {"filter_query": '{status} = "running"', "column_id": "status"},
                "color": "#1565c0",
                "fontWeight": "600",
            },
        ]
        if not focus:
            return styles, "Click a point or a row to select a trial."
        styles.append(
            {"if": {"filter_query": f'{{trial_id}} = "{focus}"'}, "backgroundColor": "#fff3c4"}
        )
        return styles, f"Selected trial {focus}."

    @app.callback(Output("trial-tab", "label"), Input("sel", "data"), prevent_initial_call=True)
    def tab_label(sel: dict[str, Any] | None) -> str:
        """The trial tab named after the selected trial."""
        focus = (sel or {}).get("focus")
        return f"Trial {focus}" if focus else "Trial (the best)"

    @app.callback(
        Output("tabs", "value"),
        Input("open-trial", "n_clicks"),
        prevent_initial_call=True,
    )
    def open_trial(_: int) -> str:
        """Switch to the trial tab."""
        return "trial"

    @app.callback(
        Output("g-bsf", "figure"),
        Output("g-dist", "figure"),
        Output("g-pareto", "figure"),
        Output("pareto-box", "style"),
        Output("pareto-y", "options"),
        Input("version", "data"),
        *FILTER_INPUTS,
        Input("sel", "data"),
        Input("bsf-x", "value"),
        Input("pareto-y", "value"),
        State("exp", "data"),
    )
    def charts(_: Any, *args: Any) -> tuple[Any, ...]:
        """Best so far, IoU by architecture and the Pareto front of the filtered trials."""
        *values, sel, x, pareto_y, name = args
        focus = (sel or {}).get("focus")
        try:
            exp = _load(root, cache, name)
            shown = data.filter_trials(exp.trials, _filters(tuple(values)))
            bsf = data.best_so_far(shown, exp.epochs)
            declared = data.declared_objectives(exp.info)
            objectives = data.objectives(exp.trials, declared)
            others = objectives[1:]
            pair = [objectives[0], *(o for o in others if o[0] == pareto_y), *others][:2]
            has_pareto = len(pair) == 2
            # the search's own front when both axes are among its objectives
            own = len(declared) if all(o in declared for o in pair) else 0
            return (
                figures.best_so_far(bsf, shown, x or "order", focus),
                figures.distribution(shown, focus),
                figures.pareto(shown, pair, focus, own) if has_pareto else figures.empty(""),
                None if has_pareto else {"display": "none"},
                [{"label": label, "value": column} for column, label, _ in others],
            )
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("charts of %s", name)
            blank = figures.empty(pages.describe_error(exc))
            return blank, blank, blank, {"display": "none"}, []

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
        """Parallel coordinates, when the parameters tab is open."""
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
                limit=None if pc_lines == "all" else pages.PARALLEL_LINES,
            )
            return figure, [{"label": a, "value": a} for a in archs] if len(archs) > 1 else []
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("parallel coordinates of %s", name)
            return figures.empty(pages.describe_error(exc)), []

    @app.callback(
        Output("g-curves", "figure"),
        Input("version", "data"),
        Input("sel", "data"),
        Input("curve-metric", "value"),
        *FILTER_INPUTS,
        State("exp", "data"),
    )
    def curves(_: Any, sel: dict[str, Any] | None, metric: str, *args: Any) -> Any:
        """Learning curves of the selected trials (the five best when none is)."""
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
            return figures.empty(pages.describe_error(exc))

    @app.callback(
        Output("g-importance", "figure"),
        Output("importance-note", "children"),
        Input("version", "data"),
        Input("tabs", "value"),
        State("exp", "data"),
    )
    def importance(version: str, tab: str, name: str) -> tuple[Any, str]:
        """Parameter importances, when the parameters tab is open (memoised)."""
        if tab != "parameters":  # computed when its tab opens (seconds on a large search)
            raise PreventUpdate
        try:
            exp = _load(root, cache, name)
            frame, note = memo.get((name, version or ""), lambda: data.importances(exp))
            return figures.importance(frame, note), note if len(frame) else ""
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("importance of %s", name)
            return figures.empty(pages.describe_error(exc)), ""

    @app.callback(
        Output("final-box", "children"),
        Input("version", "data"),
        State("exp", "data"),
    )
    def final(_: Any, name: str) -> Any:
        """The held-out `final` scores, and with `final --shifts` their robustness, when
        `final` has run."""
        try:
            exp = _load(root, cache, name)
        except Exception:
            return None
        parts = []
        if exp.final is not None and len(exp.final):
            parts += [html.H3("Held-out test scores (final)"), pages.final_table(exp.final)]
        if exp.robustness is not None and len(exp.robustness):
            parts.append(pages.robustness_view(exp.robustness))
        return html.Div(parts) if parts else None

    @app.callback(
        Output("trial-view", "children"),
        Input("version", "data"),
        Input("sel", "data"),
        Input("tabs", "value"),
        State("exp", "data"),
    )
    def trial_view(_: Any, sel: dict[str, Any] | None, tab: str, name: str) -> Any:
        """The selected trial's view, when its tab is open."""
        if tab != "trial":
            raise PreventUpdate
        try:
            exp = _load(root, cache, name)
            return pages.trial_view(exp, (sel or {}).get("focus"))
        except Exception as exc:
            if not isinstance(exc, ResultsError):
                log.exception("trial view of %s", name)
            return html.Div(
                str(exc) if isinstance(exc, ResultsError) else pages.describe_error(exc),
                className="err",
            )
