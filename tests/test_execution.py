"""The short path for plain data (graphql/execution.py) answers exactly what graphql-core's
own execution answers: the same data and the same errors, on the real schema over a real
ledger, and on a small schema built to break its assumptions."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry
from starlette.routing import Route
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from conftest import Factory
from gql_billing.app import create_app
from gql_billing.auth import Principal, Scope
from gql_billing.graphql.context import Context
from gql_billing.graphql.execution import PlainDataExecution, execution_for
from gql_billing.graphql.schema import SchemaPolicy, build_schema
from gql_billing.graphql.view import BillingGraphQL
from gql_billing.settings import Settings

RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { reservation { id } }
    ... on Problem { detail }
  }
}
"""
CAPTURE = """
mutation Capture($input: CaptureReservationInput!) {
  captureReservation(input: $input) { __typename }
}
"""

QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "the benchmark's page": (
        """{ wallet { balanceCredits } transactions(first: 20) { edges { node {
              id kind amountCredits balanceAfterCredits createdAt } } } }""",
        {},
    ),
    "aliases, __typename, fragments, skip and include": (
        """query Q($yes: Boolean!, $no: Boolean!) {
             t: transactions(first: 7) {
               __typename
               pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }
               edges {
                 c: cursor
                 node { ...Entry kind @skip(if: $yes) reference @include(if: $no) }
               }
             }
           }
           fragment Entry on Transaction {
             __typename id amount: amountCredits description createdAt
             ... on Transaction { balanceDeltaCredits availableDeltaCredits }
           }""",
        {"yes": True, "no": False},
    ),
    "a resolver inside the page (ordinary path for that subtree)": (
        """{ transactions(first: 30) { edges { node {
              id kind reservation { id status amountCredits } topup { id } } } } }""",
        {},
    ),
    "the same field selected twice, one with a sub-field more": (
        """{ transactions(first: 5) { edges { node { id } } edges { node { id kind } } } }""",
        {},
    ),
    "an interface through node": (
        """query N($id: ID!) {
             node(id: $id) { __typename id ... on Organization { name plan } }
           }""",
        {},
    ),
    "reservations and the wallet's derived fields": (
        """{ wallet { balanceCredits reservedCredits availableCredits }
             reservations(first: 10) { edges { cursor node {
               id status billingMode amountCredits capturedCredits reference createdAt } } } }""",
        {},
    ),
}


def executions(schema: strawberry.Schema) -> dict[str, type[Any]]:
    return {
        "short path": schema.execution_context_class,
        "graphql-core": StrawberryGraphQLCoreExecutionContext,
    }


@pytest.fixture
async def ledger(make: Factory) -> tuple[Context, str]:
    org = await make.org(credits=10_000, scopes="billing:read,billing:write")
    service = make.client(await make.token(None, "billing:spend"))
    for i in range(14):  # 1 grant + 14 reservations + 7 captures: 22 entries
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
        assert created["reserveCredits"]["__typename"] == "ReservationCreated", created
        reservation_id = created["reserveCredits"]["reservation"]["id"]
        if i % 2 == 0:
            await service(CAPTURE, {"input": {"reservationId": reservation_id}})
    principal = Principal(
        token_id=1, organization_id=org.pk, scopes=frozenset({Scope.BILLING_READ})
    )
    context = Context(request=None, response=None, principal=principal, billing=make.app.billing)  # type: ignore[arg-type]
    return context, org.id


@pytest.mark.parametrize("name", list(QUERIES))
async def test_the_real_schema_answers_the_same_both_ways(
    name: str, ledger: tuple[Context, str]
) -> None:
    context, org_id = ledger
    query, variables = QUERIES[name]
    if "$id" in query:
        variables = {"id": org_id}
    schema = build_schema(policy=SchemaPolicy())
    assert issubclass(schema.execution_context_class, PlainDataExecution)
    answers = {}
    for label, execution in executions(schema).items():
        schema.execution_context_class = execution
        context.loaders = type(context.loaders)(context.billing.db)
        result = await schema.execute(query, variable_values=variables, context_value=context)
        answers[label] = (result.data, [e.formatted for e in result.errors or []])
    assert answers["short path"] == answers["graphql-core"]
    data, errors = answers["short path"]
    assert errors == []
    assert data and all(value is not None for value in data.values())


async def test_the_benchmark_page_is_twenty_transactions(ledger: tuple[Context, str]) -> None:
    context, _ = ledger
    schema = build_schema(policy=SchemaPolicy())
    result = await schema.execute(QUERIES["the benchmark's page"][0], context_value=context)
    assert result.errors is None and result.data is not None
    edges = result.data["transactions"]["edges"]
    assert len(edges) == 20
    assert {edge["node"]["kind"] for edge in edges} >= {"RESERVATION", "CHARGE"}


# -- a small schema whose data breaks the rules ---------------------------------------------------


@strawberry.interface
class Thing:
    name: str


@strawberry.type
class Item(Thing):
    count: int
    tags: list[str]
    note: str | None


@strawberry.type
class Holder:
    item: Item
    items: list[Item]
    maybe: Item | None


class NotAnItem:
    name = "impostor"
    count = 1
    tags: tuple[str, ...] = ()
    note = None


class Raw:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


class Exploding:
    name = "boom"
    tags: tuple[str, ...] = ()
    note = None

    @property
    def count(self) -> int:
        raise RuntimeError("no count today")


def item(**changes: Any) -> Any:
    values: dict[str, Any] = {"name": "a", "count": 1, "tags": ["x"], "note": None, **changes}
    return Item(**values) if not changes.get("raw") else Raw(**values)


HOLDERS: dict[str, Any] = {
    "a null in a non-null leaf": lambda: Holder(
        item=Raw(name=None, count=1, tags=[], note=None), items=[], maybe=None
    ),
    "a value the scalar cannot serialize": lambda: Holder(
        item=Item(name="a", count="many", tags=[], note=None),  # type: ignore[arg-type]
        items=[],
        maybe=None,
    ),
    "a null list item that may not be null": lambda: Holder(
        item=Item(name="a", count=1, tags=[None], note=None),  # type: ignore[list-item]
        items=[],
        maybe=None,
    ),
    "an object of another type where an interface's implementation is due": lambda: Holder(
        item=NotAnItem(),  # type: ignore[arg-type]
        items=[Item(name="b", count=2, tags=[], note="n")],
        maybe=None,
    ),
    "an attribute that raises, in a list": lambda: Holder(
        item=Item(name="a", count=1, tags=[], note=None),
        items=[Item(name="b", count=2, tags=[], note=None), Exploding()],  # type: ignore[list-item]
        maybe=Exploding(),  # type: ignore[arg-type]
    ),
    "not a list where a list is due": lambda: Holder(
        item=Item(name="a", count=1, tags="xyz", note=None),  # type: ignore[arg-type]
        items=[],
        maybe=None,
    ),
    "all well": lambda: Holder(
        item=Item(name="a", count=1, tags=["x", "y"], note=None),
        items=[Item(name="b", count=2, tags=[], note="n")],
        maybe=Item(name="c", count=3, tags=["z"], note=None),
    ),
}


@strawberry.type
class Query:
    holder_name: strawberry.Private[str]

    @strawberry.field
    def holder(self) -> Holder:
        return HOLDERS[self.holder_name]()  # type: ignore[no-any-return]


TOY_QUERY = """{ holder {
  item { __typename name count tags note }
  items { name count tags }
  maybe { ... on Thing { name } ... on Item { count note } }
} }"""


@pytest.mark.parametrize("case", list(HOLDERS))
async def test_broken_data_gets_graphql_cores_own_errors(case: str) -> None:
    schema = strawberry.Schema(query=Query, types=[Item])
    schema.execution_context_class = execution_for(schema._schema, default_resolver=getattr)
    assert schema.execution_context_class.plain  # the short path is on
    answers = {}
    for label, execution in executions(schema).items():
        schema.execution_context_class = execution
        result = await schema.execute(TOY_QUERY, root_value=Query(holder_name=case))
        answers[label] = (result.data, sorted(str(e.formatted) for e in result.errors or []))
    assert answers["short path"] == answers["graphql-core"]
    data, errors = answers["short path"]
    if case == "all well":
        assert errors == [] and data is not None
        assert data["holder"]["item"]["tags"] == ["x", "y"]
    else:
        assert errors, "each broken case is an error both ways"


def test_the_app_serves_the_short_path_schema(settings: Settings) -> None:
    app = create_app(settings)
    routes = [r for r in app.routes if isinstance(r, Route) and r.path == "/graphql"]
    view = routes[0].endpoint
    assert isinstance(view, BillingGraphQL)
    assert issubclass(view.schema.execution_context_class, PlainDataExecution)


async def test_plain_data_skips_the_field_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    # graphql-core's per-field pipeline runs for the root field (it has a resolver) only;
    # with the short path off it runs for every field of the response.
    schema = strawberry.Schema(query=Query, types=[Item])
    short_path = execution_for(schema._schema, default_resolver=getattr)
    calls: list[str] = []
    ordinary = StrawberryGraphQLCoreExecutionContext.execute_field

    def counted(self: Any, parent_type: Any, *args: Any) -> Any:
        calls.append(parent_type.name)
        return ordinary(self, parent_type, *args)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_field", counted)
    counts = {}
    for label, execution in {
        "short": short_path,
        "ordinary": executions(schema)["graphql-core"],
    }.items():
        schema.execution_context_class = execution
        calls.clear()
        result = await schema.execute(TOY_QUERY, root_value=Query(holder_name="all well"))
        assert result.errors is None
        counts[label] = len(calls)
    assert counts == {"short": 1, "ordinary": 15}
