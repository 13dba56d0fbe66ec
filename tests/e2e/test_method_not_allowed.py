"""A method a route does not answer is HTTP 405 with an `Allow` header and a problem
document, on every route (REST operations, webhooks, probes, GraphQL, static files)."""

from __future__ import annotations

import httpx
import pytest

from conftest import Factory

PROBLEM = "application/problem+json"
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
# path -> the methods it answers (HEAD goes with GET for Starlette's routes)
ROUTES = {
    "/v1/op/billing.credits.balance": {"GET"},
    "/v1/op/billing.credits.transactions": {"GET"},
    "/v1/op/billing.topup": {"POST"},
    "/v1/op/payment_methods.attach": {"POST"},
    "/webhooks/stripe": {"POST"},
    "/healthz": {"GET", "HEAD"},
    "/readyz": {"GET", "HEAD"},
    "/metrics": {"GET", "HEAD"},
    "/graphql": {"GET", "HEAD", "POST"},
    "/graphiql/react@18.2.0/package.json": {"GET", "HEAD"},
    "/v1/openapi.json": {"GET", "HEAD"},
    "/v1/docs": {"GET", "HEAD"},
}
CASES = [
    (path, method)
    for path, allowed in ROUTES.items()
    for method in METHODS
    if method not in allowed
]


@pytest.mark.parametrize(("path", "method"), CASES)
async def test_a_method_a_route_does_not_answer_is_a_405_problem_with_allow(
    path: str, method: str, make: Factory, http: httpx.AsyncClient
) -> None:
    org = await make.org()

    response = await http.request(
        method,
        f"{make.app.base_url}{path}",
        headers={"Authorization": f"Bearer {org.token}"},
        content=b"{}" if method in {"POST", "PUT", "PATCH"} else None,
    )

    assert response.status_code == 405, response.text
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed == ROUTES[path]
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 405
    assert body["title"] == "Method Not Allowed"
    assert {m.strip() for m in body["allow"].split(",")} == allowed
