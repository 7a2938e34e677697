"""Static HTML for the two human audiences of a run, readable with no network.

Each executed notebook becomes two pages: ``html/<phase>.html`` for analysts (code
included, so every number can be traced to the call that produced it) and
``html/leadership/<phase>.html`` with no code and no prompts. ``index.html`` puts the
grade first and links every page and artifact of the run.

Reports are opened from disks, archives and CI artifacts, often offline and sometimes
in places where a page that phones home is a finding in itself. So the pages load
nothing from the network: notebooks are rendered through the ``offline`` nbconvert
template in ``templates/`` (nbconvert's ``lab`` template minus its CDN scripts), charts
are inline SVG, CSS is embedded, and every page is checked with
:func:`network_references` before it is written.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import jinja2
import nbformat
from nbconvert import HTMLExporter
from traitlets.config import Config

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
NOTEBOOK_TEMPLATE = "offline"
INDEX_TEMPLATE = "run_index.html.j2"
PHASE_STATUSES = ("OK", "ERROR", "BLOCKED", "STOPPED", "SKIPPED", "WAITING")  # WAITING: behind a gate
GRADES = ("Green", "Yellow", "Red")
CHECK_STATUS_ORDER = ("PASS", "FAIL", "INCONCLUSIVE", "SKIPPED", "STOPPED", "BLOCKED", "ERROR")
ARTIFACT_FOLDERS = ("reports", "evidence", "charts")
MANIFEST = "manifest.json"
RUN_RECORDS = ("readiness_score.json", "run.json", MANIFEST)
LEADERSHIP_HIDDEN_TAGS = frozenset({"analyst-only", "parameters", "injected-parameters"})
_PHASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_REMOTE = re.compile(r"^\s*(?:(?:https?|wss?|ftp):|//)", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""", re.IGNORECASE)
_SCRIPT_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s'\"<>)]*")
_SVG_ACTIVE = re.compile(r"<script|<foreignobject|\son[a-z]+\s*=|javascript:", re.IGNORECASE)
_XML_PROLOG = re.compile(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", re.IGNORECASE)
# Attributes through which an element makes the browser fetch something by itself.
# Plain <a href> is navigation the reader chooses, so it is not listed.
_RESOURCE_ATTRS: dict[str, tuple[str, ...]] = {
    "script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "frame": ("src",),
    "embed": ("src",), "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",),
    "track": ("src",), "object": ("data",), "link": ("href",), "input": ("src",),
    "image": ("href", "xlink:href"), "use": ("href", "xlink:href"), "feimage": ("href", "xlink:href"),
}


class RunWriter(Protocol):
    """The part of the run folder that rendering needs."""

    root: Path

    def write_text(self, relpath: str, text: str, *, producer: str | None = None) -> Any: ...


class OfflineRenderError(ValueError):
    """A page would load something from the network; it is not written."""


class _ResourceScanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if not value:
                continue
            if name in _RESOURCE_ATTRS.get(tag, ()):
                urls = [part.strip().split(" ")[0] for part in value.split(",")] if name == "srcset" else [value]
                self.found += [f"<{tag} {name}={u}>" for u in urls if _REMOTE.match(u)]
            elif name == "style":
                self._css(value, f"<{tag} style>")
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self._css(data, "<style>")
        elif self._in == "script":
            self.found += [f"<script> {u}" for u in _SCRIPT_URL.findall(data)]

    def _css(self, text: str, where: str) -> None:
        for match in _CSS_URL.finditer(text):
            url = match.group(1) or match.group(2)
            if _REMOTE.match(url):
                self.found.append(f"{where} {url}")


def network_references(html: str) -> list[str]:
    """Every place where ``html`` would make the browser fetch from the network.

    Looks at resource attributes (script/img/iframe/link/… and SVG href), CSS ``url()``
    and ``@import`` in style elements and attributes, and URLs inside inline scripts.
    Links the reader may click (``<a href>``) are not resource loads and are ignored.
    """
    scanner = _ResourceScanner()
    scanner.feed(html)
    scanner.close()
    return scanner.found


def svg_is_inert(svg: str) -> bool:
    """True when an SVG cannot run script, so it is safe to place inline in a page."""
    return not _SVG_ACTIVE.search(svg)


def strip_xml_prolog(svg: str) -> str:
    """Drop an XML declaration or doctype, which have no meaning inside HTML."""
    return _XML_PROLOG.sub("", svg, count=1)


def _check_phase(phase: str) -> None:
    if not _PHASE.match(phase):
        raise ValueError(f"phase must be letters, digits, '_' or '-', got {phase!r}")


def _exporter(*, leadership: bool) -> HTMLExporter:
    config = Config()
    config.HTMLExporter.extra_template_basedirs = [str(TEMPLATES_DIR)]
    config.HTMLExporter.template_name = NOTEBOOK_TEMPLATE
    config.HTMLExporter.embed_images = True
    config.HTMLExporter.exclude_input = leadership
    config.HTMLExporter.exclude_input_prompt = leadership
    config.HTMLExporter.exclude_output_prompt = leadership
    exporter = HTMLExporter(config=config)
    exporter.register_filter("svg_is_inert", svg_is_inert)
    exporter.register_filter("strip_xml_prolog", strip_xml_prolog)
    return exporter


def _leadership_view(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what leadership has no use for: parameter cells, cells tagged
    ``analyst-only`` and code cells that show nothing once their code is hidden."""
    view = copy.deepcopy(nb)
    view.cells = [
        cell for cell in view.cells
        if not LEADERSHIP_HIDDEN_TAGS.intersection(cell.get("metadata", {}).get("tags", []))
        and not (cell.cell_type == "code" and not cell.get("outputs"))
    ]
    return view


def render_notebook(notebook_path: Path, run: RunWriter, *, phase: str) -> tuple[str, str]:
    """Write ``html/<phase>.html`` (with code) and ``html/leadership/<phase>.html`` (without).

    Both pages are checked for network loads first; if either has one (for example a
    chart displayed with a JavaScript renderer, or a markdown image on a web server)
    :class:`OfflineRenderError` names it and nothing is written.
    """
    _check_phase(phase)
    notebook_path = Path(notebook_path)
    if not notebook_path.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook_path}")
    nb = nbformat.read(notebook_path, as_version=4)
    resources = {"metadata": {"name": phase, "path": str(notebook_path.parent)}}
    analyst, _ = _exporter(leadership=False).from_notebook_node(nb, resources=copy.deepcopy(resources))
    resources["metadata"]["name"] = f"{phase} (leadership)"
    leadership, _ = _exporter(leadership=True).from_notebook_node(_leadership_view(nb), resources=resources)
    pages = {f"html/{phase}.html": analyst, f"html/leadership/{phase}.html": leadership}
    for relpath, html in pages.items():
        found = network_references(html)
        if found:
            raise OfflineRenderError(
                f"{relpath} would load {len(found)} network resource(s), first: {found[:3]}")
    for relpath, html in pages.items():
        run.write_text(relpath, html, producer="render")
    analyst_path, leadership_path = pages
    return analyst_path, leadership_path


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _link(root: Path, relpath: str | None) -> dict[str, str] | None:
    """A link to a file of the run, or None when the file does not exist there."""
    if not relpath or not (root / relpath).is_file():
        return None
    return {"href": quote(relpath), "path": relpath, "size": _human_size((root / relpath).stat().st_size)}


def _records(root: Path) -> list[dict[str, str]]:
    """Run-level records. The manifest is written when the run finalizes, after this
    page, so it is linked even before it exists; the others only when present."""
    links = []
    for name in RUN_RECORDS:
        link = _link(root, name)
        if link is None and name == MANIFEST:
            link = {"href": quote(name), "path": name, "size": "written when the run finalizes"}
        if link:
            links.append(link)
    return links


def _artifacts(root: Path) -> dict[str, list[dict[str, str]]]:
    """Files under reports/, evidence/, charts/ (hidden and temporary files skipped)."""
    groups: dict[str, list[dict[str, str]]] = {}
    for folder in ARTIFACT_FOLDERS:
        base = root / folder
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        links = [_link(root, p.relative_to(root).as_posix()) for p in files
                 if not any(part.startswith(".") for part in p.relative_to(base).parts)]
        groups[folder] = [link for link in links if link]
    return groups


def _ordered_counts(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    keys = [s for s in CHECK_STATUS_ORDER if s in counts] + sorted(set(counts) - set(CHECK_STATUS_ORDER))
    return [(k, int(counts[k])) for k in keys if int(counts[k])]


def _phase_rows(root: Path, phases: Sequence[Mapping[str, Any]],
                checks_summary: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    rows = []
    for i, phase in enumerate(phases):
        missing = [k for k in ("phase", "status") if k not in phase]
        if missing:
            raise ValueError(f"phase #{i}: missing keys {missing}")
        if phase["status"] not in PHASE_STATUSES:
            raise ValueError(f"phase {phase['phase']!r}: status must be one of "
                             f"{', '.join(PHASE_STATUSES)}, got {phase['status']!r}")
        elapsed = phase.get("elapsed_s")
        rows.append({
            "phase": phase["phase"], "status": phase["status"], "error": phase.get("error"),
            "elapsed": "—" if elapsed is None else f"{float(elapsed):.1f} s",
            "counts": _ordered_counts(checks_summary.get(phase["phase"], {})),
            "links": [(label, _link(root, phase.get(key))) for label, key in
                      (("leadership", "leadership_html"), ("analyst", "html"), ("notebook", "notebook"))],
        })
    return rows


def _score_view(score: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if score is None:
        return None
    missing = [k for k in ("grade", "overall_score") if k not in score]
    if missing:
        raise ValueError(f"score: missing keys {missing}")
    if score["grade"] not in GRADES:
        raise ValueError(f"score: grade must be one of {', '.join(GRADES)}, got {score['grade']!r}")
    blockers = score.get("blockers") or []
    return {"grade": score["grade"], "overall": f"{float(score['overall_score']):.1f}",
            "blockers": [b if isinstance(b, str) else "; ".join(f"{k}: {v}" for k, v in dict(b).items())
                         for b in blockers]}


def _totals(checks_summary: Mapping[str, Mapping[str, int]]) -> list[tuple[str, int]]:
    total: dict[str, int] = {}
    for counts in checks_summary.values():
        for status, n in counts.items():
            total[status] = total.get(status, 0) + int(n)
    return _ordered_counts(total)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


_DECISION_BADGES = {"approved": "PASS", "refused": "BLOCKED", "escalated": "FAIL"}


def _approvals(root: Path) -> list[dict[str, str]]:
    """The approvals log (JSON lines) as table rows; a line that is not JSON is shown as such."""
    path = root / "reports" / "hitl_approvals.log"
    rows: list[dict[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            e = {"kind": "unreadable", "reason": line[:200]}
        kind = str(e.get("kind", ""))
        rows.append({"at": str(e.get("at", "")), "kind": kind, "badge": _DECISION_BADGES.get(kind, "other"),
                     "action": str(e.get("action") or ""), "phase": str(e.get("phase") or ""),
                     "apps": ", ".join(e.get("apps") or []), "approval_id": str(e.get("approval_id") or ""),
                     "reason": str(e.get("reason") or "")})
    return rows


def _gates(root: Path) -> list[dict[str, str]]:
    """The human approval gates of run.json, each with its file (linked when present)."""
    try:
        gates = json.loads((root / "run.json").read_text()).get("gates") or {}
    except (OSError, ValueError):
        return []
    rows = []
    for n, g in sorted(gates.items()):
        link = _link(root, str(g.get("file") or ""))
        rows.append({"gate": f"Gate {n}", "status": str(g.get("status", "")).upper(),
                     "before": str(g.get("before_phase") or "—"), "reason": str(g.get("reason") or ""),
                     "href": link["href"] if link else "", "path": link["path"] if link else ""})
    return rows


def render_index(run: RunWriter, *, title: str, phases: Sequence[Mapping[str, Any]],
                 score: Mapping[str, Any] | None, profile_note: str,
                 checks_summary: Mapping[str, Mapping[str, int]]) -> str:
    """Write ``index.html``: the grade first, then phases, then every artifact of the run.

    ``score`` is the content of ``readiness_score.json``, or None when the run did not
    complete (the page then says so instead of showing a grade). Links are shown only
    for files present in the run folder, so the page never points at nothing.
    """
    root = Path(run.root)
    html = _environment().get_template(INDEX_TEMPLATE).render(
        title=title, run_id=root.name, score=_score_view(score), profile_note=profile_note,
        phases=_phase_rows(root, phases, checks_summary), totals=_totals(checks_summary),
        records=_records(root),
        approvals=_approvals(root),
        gates=_gates(root),
        artifacts=_artifacts(root),
    )
    found = network_references(html)
    if found:
        raise OfflineRenderError(f"index.html would load network resources: {found[:3]}")
    run.write_text("index.html", html, producer="render")
    return "index.html"

