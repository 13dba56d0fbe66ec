"""A differential property test of the short path for plain data (graphql/execution.py):
random valid query documents over the whole schema, with variables, aliases, named
fragments and an `operationName` choosing between two operations, run on a real ledger
through the short path and through graphql-core's own execution, answer the same data and
the same errors.

Documents come from hypothesis-graphql; each is then rewritten (literal arguments lifted
into variables, fields aliased, the root selection moved into a named fragment, a second
operation added) so the shapes a real client sends are covered too. Queries only: they read,
so running one twice is safe."""

from __future__ import annotations

from typing import Any

import graphql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from conftest import Factory
from gql_billing.auth import Principal, Scope
from gql_billing.graphql.context import Context
from gql_billing.graphql.execution import PlainDataExecution
from gql_billing.graphql.schema import SchemaPolicy, build_schema

EXAMPLES = 100

RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { reservation { id } }
  }
}
"""
CAPTURE = """
mutation Capture($input: CaptureReservationInput!) {
  captureReservation(input: $input) { __typename }
}
"""

CUSTOM_SCALARS = {
    "Date": st.sampled_from(["2026-11-01", "2026-11-20", "2025-01-01"]).map(
        lambda s: graphql.StringValueNode(value=s)
    ),
    "Credits": st.integers(0, 2**53 - 1).map(lambda n: graphql.IntValueNode(value=str(n))),
    "DateTime": st.sampled_from(["2026-11-20T09:30:00+00:00", "2020-01-01T00:00:00Z"]).map(
        lambda s: graphql.StringValueNode(value=s)
    ),
}


class Rewrite(graphql.Visitor):
    """Lifts literal arguments into variables and aliases some fields, as clients do."""

    def __init__(self, type_info: graphql.TypeInfo, draw: Any) -> None:
        super().__init__()
        self.type_info, self.draw = type_info, draw
        self.definitions: list[graphql.VariableDefinitionNode] = []
        self.values: dict[str, Any] = {}
        self.aliases = 0

    def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> Any:
        argument = self.type_info.get_argument()
        if argument is None or isinstance(node.value, graphql.VariableNode):
            return None
        if not self.draw(st.booleans()):
            return None
        name = f"v{len(self.definitions)}"
        self.definitions.append(
            graphql.VariableDefinitionNode(
                variable=graphql.VariableNode(name=graphql.NameNode(value=name)),
                type=graphql.parse_type(str(argument.type)),
            )
        )
        self.values[name] = graphql.value_from_ast_untyped(node.value)
        return graphql.ArgumentNode(
            name=node.name, value=graphql.VariableNode(name=graphql.NameNode(value=name))
        )

    def enter_field(self, node: graphql.FieldNode, *_: Any) -> Any:
        if node.alias is not None or not self.draw(st.booleans()):
            return None
        self.aliases += 1
        return graphql.FieldNode(
            alias=graphql.NameNode(value=f"a{self.aliases}_{node.name.value}"),
            name=node.name,
            arguments=node.arguments,
            directives=node.directives,
            selection_set=node.selection_set,
        )


def client_shaped(document: graphql.DocumentNode, schema: graphql.GraphQLSchema, draw: Any):
    """(query text, variables, operationName) for one generated document."""
    type_info = graphql.TypeInfo(schema)
    rewrite = Rewrite(type_info, draw)
    rewritten = graphql.visit(document, graphql.TypeInfoVisitor(type_info, rewrite))
    (operation,) = rewritten.definitions
    assert isinstance(operation, graphql.OperationDefinitionNode)
    selections = operation.selection_set
    definitions: list[graphql.DefinitionNode] = []
    if draw(st.booleans()):
        definitions.append(
            graphql.FragmentDefinitionNode(
                name=graphql.NameNode(value="Root"),
                type_condition=graphql.NamedTypeNode(name=graphql.NameNode(value="Query")),
                selection_set=selections,
            )
        )
        spread = graphql.FragmentSpreadNode(name=graphql.NameNode(value="Root"))
        selections = graphql.SelectionSetNode(selections=(spread,))
    chosen = graphql.OperationDefinitionNode(
        operation=graphql.OperationType.QUERY,
        name=graphql.NameNode(value="Chosen"),
        variable_definitions=tuple(rewrite.definitions),
        selection_set=selections,
    )
    other = graphql.parse("query Other { viewer { scopes } }").definitions[0]
    definitions[:0] = [other, chosen] if draw(st.booleans()) else [chosen, other]
    text = graphql.print_ast(graphql.DocumentNode(definitions=tuple(definitions)))
    errors = graphql.validate(schema, graphql.parse(text))
    assert not errors, f"the rewrite made an invalid document: {errors}\n{text}"
    return text, rewrite.values, "Chosen"


def documents(schema: graphql.GraphQLSchema, count: int) -> list[tuple[str, dict[str, Any], str]]:
    """`count` client-shaped documents, drawn by Hypothesis."""
    found: list[tuple[str, dict[str, Any], str]] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        document=queries(schema, custom_scalars=CUSTOM_SCALARS, print_ast=lambda d: d),
        data=st.data(),
    )
    def collect(document: graphql.DocumentNode, data: st.DataObject) -> None:
        found.append(client_shaped(document, schema, data.draw))

    collect()
    return found


@pytest.fixture
async def ledger(make: Factory) -> Context:
    org = await make.org(credits=10_000, scopes="billing:read,billing:write")
    service = make.client(await make.token(None, "billing:spend"))
    for i in range(8):
        created = await service(
            RESERVE,
            {
                "input": {
                    "organizationId": org.id,
                    "amountCredits": 10 + i,
                    "reference": f"r-{i}",
                    "idempotencyKey": f"reserve-{i}",
                }
            },
        )
        reservation = created["reserveCredits"]["reservation"]["id"]
        if i % 2 == 0:
            await service(CAPTURE, {"input": {"reservationId": reservation}})
    principal = Principal(
        token_id=1, organization_id=org.pk, scopes=frozenset({Scope.BILLING_READ})
    )
    return Context(request=None, response=None, principal=principal, billing=make.app.billing)  # type: ignore[arg-type]


async def test_random_documents_answer_the_same_both_ways(ledger: Context) -> None:
    schema = build_schema(policy=SchemaPolicy())
    short_path = schema.execution_context_class
    assert issubclass(short_path, PlainDataExecution)
    executions = {"short path": short_path, "graphql-core": StrawberryGraphQLCoreExecutionContext}
    shapes = {"variables": 0, "fragments": 0, "aliases": 0, "answered": 0}
    for text, variables, operation_name in documents(schema._schema, EXAMPLES):
        answers = {}
        for label, execution in executions.items():
            schema.execution_context_class = execution
            ledger.loaders = type(ledger.loaders)(ledger.billing.db)
            result = await schema.execute(
                text,
                variable_values=variables,
                context_value=ledger,
                operation_name=operation_name,
            )
            errors = sorted(str(e.formatted) for e in result.errors or [])
            answers[label] = (result.data, errors)
        assert answers["short path"] == answers["graphql-core"], text
        shapes["variables"] += bool(variables)
        shapes["fragments"] += "...Root" in text
        shapes["aliases"] += " a1_" in text
        shapes["answered"] += answers["short path"][0] is not None
    # The generated documents really exercised the client shapes and real data.
    assert all(count > 0 for count in shapes.values()), shapes
