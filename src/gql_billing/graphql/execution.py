"""Execution with a short path for plain leaf fields.

A page of 20 transactions resolves about a hundred scalar fields that are plain attributes
of their parent object (`amountCredits`, `kind`, `createdAt`...). graphql-core runs each one
through the whole field pipeline: a resolve-info object, Strawberry's resolver wrapper,
awaitable checks, value completion. For a field that has no resolver, no arguments, no
extension and a scalar or enum type, all of that amounts to `getattr` and the type's
`serialize`, so that is what this executor does.

Anything unusual takes graphql-core's own path for that field, so errors read exactly as
they always do: an attribute that raises, a value that does not serialize, a null in a
non-null field, or any schema-wide resolve middleware (a tracing extension, say).
"""

from __future__ import annotations

from typing import Any, ClassVar

from graphql import GraphQLLeafType, GraphQLNonNull, GraphQLObjectType, GraphQLSchema, is_leaf_type
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

DEFINITION = "strawberry-definition"
PlainLeaf = tuple[str, GraphQLLeafType, bool]  # attribute, type, non-null


def plain_leaf_fields(schema: GraphQLSchema) -> dict[tuple[str, str], PlainLeaf]:
    """(type name, field name) -> how to read it, for every field that is a plain attribute
    with a scalar or enum type."""
    found: dict[tuple[str, str], PlainLeaf] = {}
    for type_name, graphql_type in schema.type_map.items():
        if not isinstance(graphql_type, GraphQLObjectType) or type_name.startswith("__"):
            continue
        for field_name, field in graphql_type.fields.items():
            definition = (field.extensions or {}).get(DEFINITION)
            if not isinstance(definition, StrawberryField) or field.args:
                continue
            # Strawberry marks the resolver it gives basic fields (no resolver, permission,
            # extension or exception handler): only those are plain reads.
            if not definition.is_basic_field or not getattr(field.resolve, "_is_default", False):
                continue
            field_type = field.type
            non_null = isinstance(field_type, GraphQLNonNull)
            if isinstance(field_type, GraphQLNonNull):
                field_type = field_type.of_type
            if is_leaf_type(field_type):
                assert isinstance(field_type, GraphQLLeafType)
                found[(type_name, field_name)] = (definition.python_name, field_type, non_null)
    return found


class PlainLeafExecution(StrawberryGraphQLCoreExecutionContext):
    """Set `plain_leaves` on a subclass per schema (`execution_for`)."""

    plain_leaves: ClassVar[dict[tuple[str, str], PlainLeaf]] = {}

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
    ) -> Any:
        node = field_details_list[0].node
        middleware = self.middleware_manager
        leaf = (
            None
            if middleware is not None and middleware.middlewares
            else self.plain_leaves.get((parent_type.name, node.name.value))
        )
        if leaf is not None and not node.arguments:
            attribute, leaf_type, non_null = leaf
            try:
                value = getattr(source, attribute)
                if value is not None:
                    return self.complete_leaf_value(leaf_type, value)
                if not non_null:
                    return None
            except Exception:  # graphql-core's path below reports it, with its location
                pass
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )


def execution_for(schema: GraphQLSchema, *, default_resolver: Any) -> type[PlainLeafExecution]:
    """The execution context class for this schema; Strawberry's own if fields are not read
    with plain `getattr` (a custom default resolver)."""
    leaves = plain_leaf_fields(schema) if default_resolver is getattr else {}
    return type("SchemaExecution", (PlainLeafExecution,), {"plain_leaves": leaves})
