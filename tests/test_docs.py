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


_PACKAGES = ("dropzoo", "models")


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


def _module_file(dotted):
    """The file of a project module `a.b` (a package's __init__.py), or None."""
    path = ROOT.joinpath(*dotted.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py") if path.with_suffix(".py").is_file() \
        else None


def undefined_uses(block):
    """["name"] of the project's modules and names the block uses that do not exist (imports and attributes)."""
    problems, bound = [], {}  # local name -> the project module it names
    try:
        tree = ast.parse(block)
    except SyntaxError:  # a fragment to paste into a file (contributing.md's table entries), unless it imports
        if re.search(r"^\s*(from|import) (dropzoo|models)\b", block, re.MULTILINE):
            raise
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _PACKAGES:
                    if _module_file(alias.name) is None:
                        problems.append(alias.name)
                    bound[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or \
                        alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _PACKAGES:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _module_file(dotted) is not None:
                    bound[alias.asname or alias.name] = dotted
                elif _module_file(node.module) is None or alias.name not in defined_names(_module_file(node.module)):
                    problems.append(dotted)
    for node in ast.walk(tree):  # the outermost attribute of a chain a.b.c names its module by the rest
        if isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if not isinstance(inner, ast.Name) or inner.id not in bound:
                continue
            module = bound[inner.id]
            for attr in chain:
                if _module_file(f"{module}.{attr}") is not None:
                    module = f"{module}.{attr}"
                    continue
                if attr not in defined_names(_module_file(module)):
                    problems.append(f"{module}.{attr}")
                break
    return sorted(set(problems))


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_use_names_the_modules_define(path):
    """api.md's `sources.subset(...)` raised AttributeError once subsets got a module of their own."""
    problems = [p for block in python_blocks(path.read_text(encoding="utf-8")) for p in undefined_uses(block)]
    assert not problems, f"{path.name}: {problems}"


def test_the_example_checker_reports_a_name_a_module_lacks():
    assert undefined_uses("from dropzoo import sources\nsources.subset(s, 10)\nsources.load_source()\n") == [
        "dropzoo.sources.subset"]
    assert undefined_uses("import models\nmodels.build('x')\n") == []
    # Two modules on one line, a comment after the import, a dotted import, a name imported from a package.
    assert undefined_uses("from dropzoo import client, evaluate  # two\nevaluate.nope()\nclient.Client\n") == [
        "dropzoo.evaluate.nope"]
    assert undefined_uses("import dropzoo.sources\ndropzoo.sources.nope()\ndropzoo.sources.load_source()\n") == [
        "dropzoo.sources.nope"]
    assert undefined_uses("from models import build, nope\nbuild('x')\n") == ["models.nope"]
    assert undefined_uses("from dropzoo.sources import load_source\nfrom dropzoo import gone\n") == ["dropzoo.gone"]
