"""Every GraphQL document in the README validates against the exported schema, as pasted
into GraphiQL one at a time."""

from __future__ import annotations

from graphql import build_schema, parse, validate

from gql_billing.graphql.schema import build_schema as build_app_schema
from support.readme import readme_documents


def test_every_readme_document_validates() -> None:
    schema = build_schema(build_app_schema().as_str())
    documents = readme_documents()

    errors = {doc: [e.message for e in validate(schema, parse(doc))] for doc in documents}

    assert len(documents) >= 5  # the worked session: who am I, two card steps, top-up, ledger
    assert {doc: found for doc, found in errors.items() if found} == {}
