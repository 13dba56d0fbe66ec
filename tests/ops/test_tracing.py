"""OpenTelemetry tracing: on exactly when the `otel` extra is installed."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import Factory
from gql_billing.graphql.instrumentation import tracing_extensions


def test_tracing_is_on_exactly_when_opentelemetry_is_installed() -> None:
    installed = importlib.util.find_spec("opentelemetry") is not None

    assert bool(tracing_extensions()) is installed


async def test_operations_become_spans_when_opentelemetry_is_installed(make: Factory) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the optional `otel` extra")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    org = await make.org()

    await org.api("query Balance { wallet { balanceCredits } }")

    names = [span.name for span in exporter.get_finished_spans()]
    assert "GraphQL Query: Balance" in names
