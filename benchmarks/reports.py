"""The drivers' report pages: Markdown templates in ``benchmarks/templates/``, filled with a run's numbers.

The prose of every page lives in its template, so a sentence is edited there and never inside Python; the
drivers compute the numbers (rates, ratios, table rows) and pass them in. Templates are Jinja2 because the
pages have tables of any length and sections that a run may leave out, which string.Template cannot express.

A driver that lives elsewhere keeps its template beside it and passes that folder (``cpp.compare`` renders
``cpp/templates/``); it still renders here, so every page gets the same settings and filters.

Two filters format numbers:
- ``fmt(spec)``: a value that every run has, with a format spec (``{{ m.ram_gib | fmt(".0f") }}``);
- ``measured(spec=".1f", suffix="")``: a measurement that may be missing (None), shown as ``n/a``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


def measured(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    """``value`` formatted with ``spec`` and ``suffix``; "n/a" when it was not measured (None)."""
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


@cache
def environment(folder: Path = TEMPLATES) -> jinja2.Environment:
    """The Jinja2 environment for the templates in ``folder``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        # A missing number is an error in the page, not an empty cell.
        undefined=jinja2.StrictUndefined,
        # Block tags on lines of their own leave no blank lines behind; each template ends with one newline.
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML: backticks and "|" stay as written
    )
    env.filters["fmt"] = format
    env.filters["measured"] = measured
    return env


def render(template: str, *, folder: Path = TEMPLATES, **numbers) -> str:
    """The page ``<folder>/<template>`` (``benchmarks/templates/`` unless told) with ``numbers`` filled in."""
    return environment(folder).get_template(template).render(**numbers)
