"""The documentation's links resolve, and the README stays a short front page.

Standard library only (no TensorFlow): every Markdown link and image in
README.md and docs/**/*.md must point at a file or directory that exists,
and an `#anchor` at a heading of the target Markdown file (GitHub's slugs);
every docs/*.md page must be reachable from the README; the README keeps its
two opening commands and at most 150 lines; every `module.name` a Python
example in them uses of the project's modules is defined there (read with
`ast`, nothing imported). The last tests plant broken links to prove the
checker reports them.
"""
import ast
import os
import pathlib
import re
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 150
OPENING_COMMANDS = [
    'pip install -e ".[test]" && python train.py',
    "python -m pytest -q -n auto --dist loadfile tests",
]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) or ![alt](target), with an optional "title"; <target> allowed.
_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^()\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text):
    """(line number, line) of `text` outside fenced code blocks, inline code blanked."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not line.strip()[len(match.group(1)):].strip():
                fence = None
            continue
        yield number, _INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)


def links(text):
    """(line number, target) of every link and image in `text`'s prose."""
    for number, line in prose_lines(text):
        for match in _LINK.finditer(line):
            target = match.group(2)
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1]
            yield number, target


def slug(heading):
    """GitHub's anchor for a heading's text (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    """Every anchor a Markdown text defines: heading slugs (duplicates get -1, -2, ...) and <a id>."""
    found, seen = set(), {}
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(_HTML_ANCHOR.findall(line))
    return found


def check_markdown(text, base_dir, name="<text>"):
    """Problems with the relative links of Markdown `text` whose file lies in `base_dir`.

    Returns one line per broken link: a target that does not exist, or an
    anchor that is no heading of its target (a bare `#anchor` is checked
    against `text` itself). External links (http, https, mailto) are skipped.
    """
    base_dir = pathlib.Path(base_dir)
    problems = []
    for number, target in links(text):
        if target.lower().startswith(_EXTERNAL):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = urllib.parse.unquote(path_part)
        where = f"{name}:{number}: {target}"
        if path_part:
            path = base_dir / path_part
            if not path.exists():
                problems.append(f"{where}: {path_part} does not exist")
                continue
        if not anchor:
            continue
        if not path_part:
            defined = anchors(text)
        elif path.is_file() and path.suffix.lower() == ".md":
            defined = anchors(path.read_text(encoding="utf-8"))
        else:
            problems.append(f"{where}: #{anchor} points into {path_part}, which is not a Markdown file")
            continue
        if urllib.parse.unquote(anchor) not in defined:
            problems.append(f"{where}: no heading with anchor #{anchor}")
    return problems


def markdown_files():
    return [README] + sorted(DOCS.rglob("*.md"))


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = check_markdown(path.read_text(encoding="utf-8"), path.parent, str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    linked = set()
    for _, target in links(README.read_text(encoding="utf-8")):
        path_part = urllib.parse.unquote(target.partition("#")[0])
        if path_part and not target.lower().startswith(_EXTERNAL):
            linked.add(os.path.normpath(ROOT / path_part))
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds no pages"
    missing = [str(p.relative_to(ROOT)) for p in pages if os.path.normpath(p) not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def test_readme_is_short_and_opens_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    assert _FENCE.match(lines[0]), "README.md must open with a fenced block"
    end = next(i for i in range(1, len(lines)) if _FENCE.match(lines[i]))
    assert lines[1:end] == OPENING_COMMANDS


# ---------------------------------------------------------------- the checker can fail


def test_slugs_follow_github():
    assert slug("The answers, measured") == "the-answers-measured"
    assert slug("Many GPUs / many machines") == "many-gpus--many-machines"
    assert slug("Other runtimes: model.keras, model.tflite") == "other-runtimes-modelkeras-modeltflite"
    assert slug("`--norm` and snake_case") == "--norm-and-snake_case"
    assert anchors("# A\n## A\n```\n# A\n```\n### A\n") == {"a", "a-1", "a-2"}


def test_checker_reports_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "page.md").write_text("# Page\n\n## Real heading\n", encoding="utf-8")
    (tmp_path / "pics").mkdir()
    planted = "\n".join([
        "# Here",
        "[fine](page.md) [fine too](page.md#real-heading) ![dir](pics/) [web](https://example.com/x)",
        "[same file](#here) [mail](mailto:a@b.c)",
        "[gone](missing.md) and [bad anchor](page.md#no-such-heading)",
        "![lost image](pics/lost.png) [bad local](#nowhere)",
        "`[in code](also_missing.md)`",
        "```",
        "[in a fence](fenced_missing.md)",
        "```",
    ])
    problems = check_markdown(planted, tmp_path, "planted.md")
    assert len(problems) == 4, problems
    assert any("missing.md does not exist" in p for p in problems)
    assert any("#no-such-heading" in p for p in problems)
    assert any("pics/lost.png does not exist" in p for p in problems)
    assert any("#nowhere" in p for p in problems)
    assert not any("also_missing" in p or "fenced_missing" in p for p in problems)


def test_checker_passes_a_clean_text(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("## Results\n\n### Results\n", encoding="utf-8")
    assert check_markdown("[x](sub/a.md#results-1) [y](sub/)", tmp_path) == []


_PROJECT_IMPORT = re.compile(r"^\s*(?:from (dropzoo|models) import (\w+)(?: as (\w+))?|import (models|dropzoo))\s*$",
                             re.MULTILINE)


def python_blocks(text):
    """The bodies of the ```python blocks of a Markdown text."""
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def defined_names(path):
    """The names a module file binds at its top level (defs, classes, assignments, imports)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def undefined_uses(block):
    """["alias.name"] the block uses of the project's modules that the modules do not define."""
    problems = []
    for package, module, alias, whole in _PROJECT_IMPORT.findall(block):
        path = ROOT / (f"{package}/{module}.py" if module else f"{whole}/__init__.py")
        if not path.is_file():
            problems.append(f"{package or whole}.{module}: no such module")
            continue
        names = defined_names(path)
        for name in set(re.findall(rf"\b{re.escape(alias or module or whole)}\.(\w+)", block)):
            if name not in names:
                problems.append(f"{alias or module or whole}.{name}")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_use_names_the_modules_define(path):
    """api.md's `sources.subset(...)` raised AttributeError once subsets got a module of their own."""
    problems = [p for block in python_blocks(path.read_text(encoding="utf-8")) for p in undefined_uses(block)]
    assert not problems, f"{path.name}: {problems}"


def test_the_example_checker_reports_a_name_a_module_lacks():
    assert undefined_uses("from dropzoo import sources\nsources.subset(s, 10)\nsources.load_source()\n") == [
        "sources.subset"]
    assert undefined_uses("import models\nmodels.build('x')\n") == []
