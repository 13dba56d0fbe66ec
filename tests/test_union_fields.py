"""No result union has members whose same-named fields differ in type.

One selection asking for both (`... on TopupSuccess { status } ... on Problem { status }`)
fails GraphQL validation ("Fields conflict because they return conflicting types"), so a
client could not write it. Deprecated fields are left out: their replacement is the fix.
"""

from __future__ import annotations

from graphql import (
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
    parse,
    validate,
)

from gql_billing.graphql.schema import build_schema as build_app_schema


def exported_schema() -> GraphQLSchema:
    return build_schema(build_app_schema().as_str())


def clashes(members: tuple[GraphQLObjectType, ...]) -> dict[str, dict[str, list[str]]]:
    """Field name -> {type as printed -> members}, for names printed with more than one type."""
    seen: dict[str, dict[str, list[str]]] = {}
    for member in members:
        for name, field in member.fields.items():
            if field.deprecation_reason is None:
                seen.setdefault(name, {}).setdefault(str(field.type), []).append(member.name)
    return {name: types for name, types in seen.items() if len(types) > 1}


def test_no_result_union_has_a_field_clash() -> None:
    schema = exported_schema()
    unions = [t for t in schema.type_map.values() if isinstance(t, GraphQLUnionType)]

    found = {u.name: clashes(u.types) for u in unions if clashes(u.types)}

    assert len(unions) >= 10  # every mutation result is a union
    assert found == {}


def test_the_check_finds_a_clash() -> None:
    # given a union whose members disagree on `status` (as Problem.status once did)
    schema = build_schema(
        """
        type Query { a: Result }
        type Done { status: String! }
        type Failed { status: Int! detail: String! }
        type Old { status: Int! @deprecated(reason: "gone") }
        union Result = Done | Failed | Old
        """
    )
    union = schema.get_type("Result")
    assert isinstance(union, GraphQLUnionType)

    # then the check reports it, leaving the deprecated field out
    assert clashes(union.types) == {"status": {"String!": ["Done"], "Int!": ["Failed"]}}
    # and GraphQL itself refuses the selection
    document = parse("{ a { ... on Done { status } ... on Failed { status } } }")
    [error] = validate(schema, document)
    assert "conflict because they return conflicting types" in error.message


def test_a_topup_selection_can_ask_for_every_status_and_attempt_id() -> None:
    document = parse(
        """
        mutation { topup(input: {audCents: 10000}) {
          ... on TopupSuccess { topupAttemptId status }
          ... on AuthenticationRequired { topupAttempt { id status } }
          ... on Problem { httpStatus }
        } }
        """
    )

    assert validate(exported_schema(), document) == []
