"""The README's snippets: its GraphQL documents, as a reader pastes them into GraphiQL one at
a time, and its shell blocks, as a reader runs them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"

FENCE = re.compile(r"^```(\S*)\s*$")
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})


@dataclass(frozen=True)
class Snippet:
    language: str  # "graphql", "sh", ...: the fence's info string
    text: str
    line: int  # where the fenced block starts in the README, 1-based
    variables: dict[str, Any] | None = None  # a GraphQL document's ```json block, if any

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES


def _blocks(text: str) -> list[tuple[str, str, int, int]]:
    """(language, body, first line, index of the line after the closing fence)."""
    lines = text.splitlines()
    found: list[tuple[str, str, int, int]] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"README.md:{i + 1}: a code block is never closed")
        found.append((opening.group(1), "\n".join(lines[i + 1 : end]), i + 1, end + 1))
        i = end + 1
    return found


def readme_snippets(text: str | None = None) -> list[Snippet]:
    """Every fenced block in README order. A ```graphql block holding several documents
    (separated by a blank line) gives one snippet per document; a ```json block right after
    a ```graphql block of one document (nothing but blank lines between) holds that
    document's variables, as GraphiQL's Variables pane would. Other ```json blocks are shown
    data (a header to paste) and are not snippets."""
    source = README.read_text() if text is None else text
    lines = source.splitlines()
    snippets: list[Snippet] = []
    previous_end = -1
    previous_documents: list[Snippet] = []
    for language, body, line, end in _blocks(source):
        directly_after = previous_end >= 0 and all(
            not lines[k].strip() for k in range(previous_end, line - 1)
        )
        if language == "json":
            if directly_after and previous_documents:
                if len(previous_documents) != 1:
                    raise ValueError(
                        f"README.md:{line}: variables follow a block of several documents; "
                        "give the document they belong to a block of its own"
                    )
                document = snippets[-1]  # the block's one document, appended last
                snippets[-1] = Snippet(
                    document.language, document.text, document.line, json.loads(body)
                )
            previous_documents = []
        elif language == "graphql":
            previous_documents = [
                Snippet(language, doc.strip(), line)
                for doc in re.split(r"\n\s*\n", body)
                if doc.strip()
            ]
            snippets += previous_documents
        else:
            previous_documents = []
            snippets.append(Snippet(language, body.strip(), line))
        previous_end = end
    return snippets


def readme_documents(readme: Path = README) -> list[str]:
    """The GraphQL documents of the README."""
    return [s.text for s in readme_snippets(readme.read_text()) if s.language == "graphql"]
