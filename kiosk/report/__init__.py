"""Reports: :mod:`~kiosk.report.compute` builds a JSON-able report from the store,
:mod:`~kiosk.report.text` and :mod:`~kiosk.report.html` render it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiosk.report.compute import FORMATS, SPANS, VISITS, build_report, parse_report_date
from kiosk.report.html import render_html
from kiosk.report.text import render_csv, render_json, render_table

#: ``--format`` name -> renderer of a report dict.
RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "table": render_table, "csv": render_csv, "json": render_json, "html": render_html,
}

__all__ = ["FORMATS", "RENDERERS", "SPANS", "VISITS", "build_report", "parse_report_date"]
