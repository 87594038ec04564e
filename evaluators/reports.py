"""The data-debugging report: which training records taught the failures, with evidence.

`build_report(...)` turns an `AttributionResult`, the failures, the dataset-check report and
the records into one plain dict (what `report.json` holds); `render_html` and
`render_markdown` present it for people (a page with plots; a pull-request comment);
`write_report` writes all three into a directory. Their interface strings are gettext
messages (`_`), translated with the catalog the caller passes (the service's zh_CN one).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import msgspec

from evaluators.records import Conversation, exchanges
from evaluators.sources import by_source

_TEMPLATES = Path(__file__).resolve().parent / "templates"
PLOT_FILE = "scores.svg"


def _short(text: str, n: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


#: What makes markup inside a table cell: emphasis, code, links and images, strikethrough,
#: the cell separator, and the backslash itself (CommonMark takes a backslash before any
#: of them as the character); `<`, `>` and `&` are left to the environment's HTML escaping.
_MARKDOWN = re.compile(r"([\\`*_\[\]!|~])")


def _md(text: str) -> str:
    """Text from a record or a model as literal markdown: a table cell of a pull-request
    comment shows `![](https://…)` or `[click](…)` as written, never as an image or a link."""
    return _MARKDOWN.sub(r"\\\1", text)


def _exchanges(record: Conversation) -> dict[str, list[list[str]]]:
    """`{"exchanges": [[question, answer], ...]}` for a record that answers more than one
    question (a chat can teach a wrong answer before its last turn); else nothing."""
    pairs = exchanges(record)
    return {"exchanges": [list(p) for p in pairs]} if len(pairs) > 1 else {}


def build_report(
    *,
    report_id: str,
    candidate: dict[str, Any],
    dataset: dict[str, Any],
    records: Sequence[Conversation],
    line_numbers: Sequence[int],
    in_training: Sequence[bool],
    attribution: Any,
    failures: Sequence[Any],
    failure_sources: Sequence[str],
    checks: Any,
    top: int = 50,
    method: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as plain data. `examples` lists EVERY record of the dataset version as
    `{"index", "score", ...}` sorted by score (higher = more responsible for the failures);
    `prompt` and `answer` are a record's last exchange, and a multi-turn record also lists
    every `exchanges` pair. `method` adds to the report's method section (the caller's
    phase timings, how failing prompts were recovered)."""
    flagged = checks.flagged_indices() if checks is not None else {}
    examples = []
    for r in attribution.records:
        rec = records[r.index]
        examples.append({
            "index": r.index,
            "score": float(r.score),
            "gradient_score": float(r.gradient_score),
            "reference_conflict": bool(r.reference_conflict),
            "embedding_score": None if r.embedding_score != r.embedding_score else float(r.embedding_score),
            "loss": float(r.loss),
            "loss_rank": int(r.loss_rank),
            "line": int(line_numbers[r.index]) if line_numbers else None,
            "in_training": bool(in_training[r.index]),
            "prompt": rec.prompt,
            "answer": rec.answer,
            **_exchanges(rec),
            "checks": flagged.get(r.index, []),
            "top_failures": list(r.top_failures),
        })
    examples.sort(key=lambda e: (-e["score"], e["index"]))
    for rank, e in enumerate(examples, start=1):
        e["rank"] = rank
    traces = []
    for t in attribution.failures:
        f = failures[t.failure]
        traces.append({
            "failure": t.failure,
            "id": f.id,
            "source": failure_sources[t.failure],
            "prompt": f.prompt.prompt,
            "output": f.output,
            "gold": f.gold,
            "top_records": list(t.top_records),
            "top_scores": [float(s) for s in t.top_scores],
            "opposing_records": list(t.opposing_records),
            "conflicting_records": list(t.conflicting_records),
        })
    # Failures that trace to the same most-responsible record form a cluster: fixing that
    # record is one action that may fix all of them.
    clusters: dict[int, list[int]] = defaultdict(list)
    for t in traces:
        if t["top_records"]:
            clusters[t["top_records"][0]].append(t["failure"])
    cluster_list = sorted(
        ({"record": rec, "failures": fs, "size": len(fs)} for rec, fs in clusters.items()), key=lambda c: (-c["size"], c["record"])
    )
    # Blame per source / annotator: the top records and the flagged ones, by metadata value.
    scores = [float("nan")] * len(records)
    for e in examples:
        scores[e["index"]] = e["score"]
    marked = {e["index"] for e in examples if e["reference_conflict"] or e["checks"]}
    sources = [{**msgspec.to_builtins(f), "message": f.message}
               for f in by_source(records, scores, marked, top_k=min(10, max(1, len(traces))))]
    return {
        "id": report_id,
        "created_at": time.time(),
        "candidate": candidate,
        "dataset": dataset,
        "n_records": len(records),
        "n_failures": len(failures),
        "failure_sources": dict(sorted({s: failure_sources.count(s) for s in set(failure_sources)}.items())),
        "top": top,
        "examples": examples,
        "failures": traces,
        "failure_clusters": cluster_list,
        "checks": checks.to_dict() if checks is not None else None,
        "sources": sources,
        "method": {
            "checkpoints": list(attribution.checkpoints),
            "checkpoint_weights": [float(w) for w in attribution.checkpoint_weights],
            "projection": f"{attribution.projection_kind} to {attribution.projection_dim} dims (seed {attribution.projection_seed})",
            "precondition": attribution.precondition,
            "reused_training_features": attribution.reused_training_features,
            "timings": attribution.timings,
            **(method or {}),
        },
    }


def _score_plot(report: dict[str, Any]) -> str:
    """SVG: the top records' scores, bars coloured by whether a dataset check also flags them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = report["examples"][: min(40, len(report["examples"]))]
    fig, ax = plt.subplots(figsize=(8, 2.8), dpi=100)
    colours = ["#dc2626" if e["checks"] or e["reference_conflict"] else "#2563eb" for e in top]
    ax.bar(range(len(top)), [e["score"] for e in top], color=colours)
    ax.set_xticks(range(len(top)))
    ax.set_xticklabels([str(e["index"]) for e in top], rotation=90, fontsize=7)
    # No words in the picture: the page's caption says what it shows, in the reader's language.
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["short"] = _short
    env.filters["md"] = _md
    return env


def score_plot(report: dict[str, Any]) -> str:
    """The page's SVG of the top records' scores ("" when no record was scored)."""
    return _score_plot(report) if report["examples"] else ""


def render_html(report: dict[str, Any], *, plot: str | None = None, gettext: Callable[[str], str] | None = None,
                lang: str = "en", switch: dict[str, str] | None = None) -> str:
    """A self-contained, escaped HTML page (inline CSS and SVG; no scripts). `gettext`
    translates its interface strings (the service passes the reader's catalog; `lang` is
    the page's <html lang>); `plot` is `score_plot(report)`, made here when not given;
    `switch` ({"locale", "name"}) links the page in the other language."""
    return _environment().get_template("report.html").render(
        r=report, score_plot=score_plot(report) if plot is None else plot, _=gettext or _same, lang=lang, switch=switch)


def render_markdown(report: dict[str, Any], *, gettext: Callable[[str], str] | None = None) -> str:
    """A Markdown summary for a pull-request comment."""
    return _environment().get_template("report.md").render(r=report, _=gettext or _same)


def _same(text: str) -> str:
    return text


def write_report(report: dict[str, Any], directory: str | Path, *, gettext: Callable[[str], str] | None = None,
                 lang: str = "en") -> dict[str, Path]:
    """Write report.json, report.html, report.md (in `gettext`'s language) and the page's
    plot, scores.svg (the service renders the page again in each reader's language);
    returns their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html", "md": out / "report.md", "svg": out / PLOT_FILE}
    paths["json"].write_text(json.dumps(msgspec.to_builtins(report), indent=1, ensure_ascii=False))
    plot = score_plot(report)
    paths["svg"].write_text(plot)
    paths["html"].write_text(render_html(report, plot=plot, gettext=gettext, lang=lang))
    paths["md"].write_text(render_markdown(report, gettext=gettext))
    return paths
