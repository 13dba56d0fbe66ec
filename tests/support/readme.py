"""The README's GraphQL documents, as a reader pastes them into GraphiQL one at a time."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_documents(readme: Path = README) -> list[str]:
    """The ```graphql blocks, each split where it holds several documents (separated by a
    blank line)."""
    blocks = re.findall(r"```graphql\n(.*?)```", readme.read_text(), flags=re.DOTALL)
    return [doc.strip() for block in blocks for doc in block.split("\n\n") if doc.strip()]
