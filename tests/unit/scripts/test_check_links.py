"""scripts/check_links.py, the link check in `make lint`, on a tree of Markdown files."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.check_links import github_slug, main


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_reports_the_broken_links_and_only_those(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "docs" / "ops.md", "# Operations\n\n## When `/readyz` is 503\n")
    _write(
        tmp_path / "README.md",
        "# Retail Pulse\n\n"
        "[good file](docs/ops.md) [good anchor](docs/ops.md#when-readyz-is-503)\n"
        "[own heading](#retail-pulse) [folder](docs/) [web](https://example.com/#x)\n"
        "[missing file](docs/api.md)\n"
        "[missing anchor](docs/ops.md#runbook)\n"
        "`[in a code span](docs/nope.md)`\n\n"
        "```\n[in a code block](docs/nope.md)\n```\n",
    )

    assert main(["--root", str(tmp_path), str(tmp_path)]) == 1

    reported = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 1)[0].rsplit(":", 1)[1] for line in reported[:-1]] == ["5", "6"]
    assert "docs/api.md: no such file or folder" in reported[0]
    assert "docs/ops.md#runbook: no heading or anchor #runbook in ops.md" in reported[1]
    assert reported[-1] == "check_links: 2 broken link(s) in 2 file(s)"


def test_a_tree_whose_links_resolve_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "a.md", "# A\n\n## A\n\n[second A](#a-1) [b](b.md#b)\n")
    _write(tmp_path / "b.md", "B\n=\n")
    # A virtualenv's Markdown is not ours to check.
    _write(tmp_path / ".venv" / "lib" / "x.md", "[broken](nowhere.md)\n")

    assert main(["--root", str(tmp_path), str(tmp_path)]) == 0
    assert "2 Markdown file(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Errors that any endpoint may answer", "errors-that-any-endpoint-may-answer"),
        ("`max_in_flight` and the byte budget — why", "max_in_flight-and-the-byte-budget--why"),
        ("Requests, load, crashes and shutdown", "requests-load-crashes-and-shutdown"),
        ("When `/readyz` answers 503", "when-readyz-answers-503"),
    ],
)
def test_slugs_follow_githubs_rules(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug
