"""Check the relative links and #anchors of every Markdown file in the repository, offline.

A link to a file or folder must exist (relative to the linking file, or to the repository
root when it starts with ``/``); a ``#fragment`` must name a heading of the target Markdown
file by GitHub's slug rules, or an ``id``/``name`` attribute in it. External links (any
URL scheme) are not fetched. Code blocks and code spans are skipped.

Usage: ``python scripts/check_links.py [PATH ...]`` (default: the repository root). Prints
each broken link as ``file:line: target: problem`` and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

__all__ = ["BrokenLink", "check_files", "find_markdown", "github_slug", "heading_anchors", "main"]

ROOT = Path(__file__).resolve().parent.parent

# Folders that hold no documentation of ours: virtualenvs, caches, build and tool output.
SKIP_DIRS = frozenset({"node_modules", "build", "dist", "__pycache__", "htmlcov", "out"})

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BLOCKQUOTE = re.compile(r"^(?: {0,3}> ?)+")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target may be <bracketed> and carry a "title".
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], which may hold one level of [brackets]
    r"\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"  # (target, which may hold (parens)
)
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HTML_ANCHOR = re.compile(r"""<[a-zA-Z][^>]*?\s(?:id|name)\s*=\s*["']([^"']+)["']""")
_HTML_TAG = re.compile(r"<[^>]+>")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# GitHub keeps letters, digits, '_', '-' and spaces (which become '-'); the rest goes.
_SLUG_DROP = re.compile(r"[^\w\- ]")


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """One link that does not resolve."""

    source: Path
    line: int
    target: str
    problem: str

    def __str__(self) -> str:
        try:
            shown = self.source.resolve().relative_to(Path.cwd())
        except ValueError:
            shown = self.source
        return f"{shown}:{self.line}: {self.target}: {self.problem}"


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before de-duplication)."""
    text = _CODE_SPAN.sub(lambda match: match[2], heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = _HTML_TAG.sub("", text)
    text = text.replace("*", "")
    return _SLUG_DROP.sub("", text.strip().lower()).replace(" ", "-")


def _lines_outside_code(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks, blockquote marks removed."""
    fence: str | None = None
    for number, quoted in enumerate(text.splitlines(), start=1):
        line = _BLOCKQUOTE.sub("", quoted)
        match = _FENCE.match(line)
        if fence is not None:
            if match and match[1][0] == fence[0] and len(match[1]) >= len(fence):
                fence = None
            continue
        if match:
            fence = match[1]
            continue
        yield number, line


def heading_anchors(text: str) -> set[str]:
    """Every anchor a Markdown text defines: its headings' slugs (a repeated slug gets
    GitHub's -1, -2, ...) and the ``id``/``name`` attributes of its HTML."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    previous: tuple[int, str] = (0, "")
    for number, line in _lines_outside_code(text):
        atx = _ATX_HEADING.match(line)
        setext = (
            previous[0] == number - 1
            and previous[1].strip()
            and not previous[1].startswith("    ")
            and _SETEXT_UNDERLINE.match(line)
        )
        heading = atx[2] if atx else previous[1].strip() if setext else None
        if heading is not None:
            slug = github_slug(heading)
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
        anchors.update(_HTML_ANCHOR.findall(line))
        # A heading line cannot also be the text of a setext heading below it.
        previous = (0, "") if heading is not None else (number, line)
    return anchors


def _link_targets(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link outside code; a link's text may wrap lines."""
    kept = dict(_lines_outside_code(text))
    # Code blocks become empty lines and code spans blanks, so line numbers still count.
    masked = "\n".join(
        _CODE_SPAN.sub(lambda span: " " * len(span[0]), kept.get(number, ""))
        for number in range(1, len(text.splitlines()) + 1)
    )
    for match in _INLINE_LINK.finditer(masked):
        yield masked.count("\n", 0, match.start(1)) + 1, match[1]
    for number, line in enumerate(masked.splitlines(), start=1):
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            yield number, definition[1]


def _check_link(source: Path, root: Path, raw: str, anchors: dict[Path, set[str]]) -> str | None:
    """Why ``raw``, linked from ``source``, does not resolve; None when it does."""
    target = raw[1:-1] if raw.startswith("<") and raw.endswith(">") else raw
    if not target or _SCHEME.match(target):
        return None
    path_part, _, fragment = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if not path_part:
        resolved = source
    elif path_part.startswith("/"):
        resolved = root / path_part.lstrip("/")
    else:
        resolved = source.parent / path_part
    if not resolved.exists():
        return "no such file or folder"
    if not fragment or resolved.suffix.lower() != ".md" or not resolved.is_file():
        return None
    resolved = resolved.resolve()
    if resolved not in anchors:
        anchors[resolved] = heading_anchors(resolved.read_text(encoding="utf-8"))
    wanted = unquote(fragment)
    if wanted not in anchors[resolved] and wanted.lower() not in anchors[resolved]:
        return f"no heading or anchor #{fragment} in {resolved.name}"
    return None


def check_files(files: Iterable[Path], root: Path) -> list[BrokenLink]:
    """Every broken relative link in ``files``; ``root`` anchors links that start with ``/``."""
    broken: list[BrokenLink] = []
    anchors: dict[Path, set[str]] = {}
    for source in files:
        text = source.read_text(encoding="utf-8")
        for line, raw in _link_targets(text):
            problem = _check_link(source, root, raw, anchors)
            if problem is not None:
                broken.append(BrokenLink(source, line, raw, problem))
    return broken


def find_markdown(paths: Iterable[Path]) -> list[Path]:
    """The *.md files at or under ``paths``, skipping hidden, virtualenv and build folders."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*.md")):
            parts = candidate.relative_to(path).parts[:-1]
            if any(
                part.startswith(".") or part in SKIP_DIRS or part.endswith(".egg-info")
                for part in parts
            ):
                continue
            found.append(candidate)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (default: the repo)")
    parser.add_argument("--root", type=Path, default=ROOT, help="where links starting with / point")
    args = parser.parse_args(argv)
    files = find_markdown(args.paths or [args.root])
    broken = check_files(files, args.root)
    for link in broken:
        print(link, file=sys.stderr)
    if broken:
        print(f"check_links: {len(broken)} broken link(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"check_links: {len(files)} Markdown file(s), every relative link resolves")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
