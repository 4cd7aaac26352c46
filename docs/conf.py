"""Sphinx configuration of fastnn's documentation site: ``sphinx-build -W docs <out>``.

The API pages are rendered from the docstrings of the fastnn that Python imports (an installed
one, or a tree built in place on PYTHONPATH); the topic pages are the Markdown files of docs/.
"""
import re

import fastnn

project = "fastnn"
release = version = fastnn.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "none"          # the docstrings name the types
autoclass_content = "both"          # a class's docstring and its __init__'s
napoleon_google_docstring = True
napoleon_numpy_docstring = False

myst_heading_anchors = 3            # links to #sections of the Markdown pages

html_theme = "furo"
html_title = f"fastnn {release}"


def _literal_examples(app, what, name, obj, options, lines):
    """Docstrings here show code as a block indented under a prose paragraph, without reST's
    ``::``; mark such a block literal (a lone ``::`` paragraph renders as nothing). A block is a
    run of paragraphs indented 4 or more columns deeper than the paragraph above it, which is
    prose: not a list item, a directive, a section header (``Args:``) or an explicit ``::``."""
    def indent(line):
        return len(line) - len(line.lstrip())

    starts = [i for i, line in enumerate(lines) if line.strip() and (i == 0 or not lines[i - 1].strip())]
    blocks, ref = [], None          # ref: (first, last line) of the paragraph above the block
    for k, start in enumerate(starts):
        if ref is not None and indent(lines[start]) >= indent(lines[ref[0]]) + 4:
            head, tail = lines[ref[0]].strip(), lines[ref[1]].rstrip()
            prose = not (head[:1] in "-*+|" or head.split(" ", 1)[0].rstrip(".)").isdigit()
                         or head.startswith("..") or tail.endswith("::")
                         or re.fullmatch(r"[A-Z][A-Za-z ]*:", head))
            if prose and (not blocks or blocks[-1][0] != ref):
                blocks.append((ref, start))
            continue                 # still inside the block (or under a header or list item)
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        ref = (start, max(i for i in range(start, end) if lines[i].strip()))
    for _, start in reversed(blocks):
        lines[start:start] = ["::", ""]
    _literal_pipe_tables(lines)


def _literal_pipe_tables(lines):
    """A Markdown pipe table in a docstring (``| a | b |`` rows and a ``|---|`` rule) is shown as
    it is written: reST would read its rows as line blocks."""
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            j += 1
        if j - i >= 2 and any(set(lines[k].strip()) <= set("|-: ") for k in range(i, j)):
            lines[i:j] = ["::", ""] + ["    " + line for line in lines[i:j]] + [""]
            j += 3
        i = j + 1


def setup(app):
    app.connect("autodoc-process-docstring", _literal_examples, priority=400)   # before napoleon
