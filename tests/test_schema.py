"""The committed schema.graphql is the exported schema, and it keeps the public contract."""

from __future__ import annotations

from pathlib import Path

from graphql import build_schema, find_breaking_changes

from gql_billing.graphql.schema import build_schema as build_app_schema

ROOT = Path(__file__).resolve().parent.parent
# The public contract as this repository promises it: the copy kept with the tests (a test
# must not depend on files outside the checkout, which differ from machine to machine).
CONTRACT = ROOT / "tests/contract/contract.graphql"


def test_committed_schema_is_the_exported_schema() -> None:
    exported = build_app_schema().as_str() + "\n"
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == exported, "run `make schema` and commit schema.graphql"


def test_schema_keeps_the_contract() -> None:
    contract = build_schema(CONTRACT.read_text())
    ours = build_schema((ROOT / "schema.graphql").read_text())

    breaks = [
        f"{change.type.name}: {change.description}"
        for change in find_breaking_changes(contract, ours)
    ]

    # Nothing removed, renamed or loosened: every part of the contract is built.
    assert breaks == []
