"""Execution with a short path for plain data.

A page of 20 transactions is about 150 fields, nearly all of them plain attributes of the
objects a resolver returned (`edges`, `node`, `amountCredits`, `createdAt`...). graphql-core
runs each one through its whole field pipeline: a path entry, a resolve-info object,
Strawberry's resolver wrapper, awaitable checks, value completion. For a field that has no
resolver, no arguments and no extension, all of that amounts to `getattr`, and for the
scalars and enums at the leaves, the type's `serialize`. So when a field and everything
selected under it is such plain data, this executor completes the whole subtree in one
recursive pass.

Anything unusual sends that field back to graphql-core's own path, which then does the work
again and reports what went wrong exactly as it always does: a field with a resolver
anywhere in the subtree, an attribute that raises, a value that does not serialize, a null
in a non-null position, an object of the wrong type, or any schema-wide resolve middleware
(a tracing extension, say). Plain reads have no side effects, so doing one twice is safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from weakref import WeakMethod

from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfoHelpers,
    GraphQLScalarType,
    GraphQLSchema,
    get_named_type,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

T = TypeVar("T")
DEFINITION = "strawberry-definition"
TYPENAME = "__typename"


class _Fallback:
    """Returned instead of a value: complete this field the ordinary way."""


FALLBACK = _Fallback()


def plain_fields(schema: GraphQLSchema) -> dict[tuple[str, str], str]:
    """(type name, field name) -> attribute, for every field that is a plain attribute: no
    resolver, permission, extension or exception handler (Strawberry marks the resolver it
    gives those), and no arguments."""
    found: dict[tuple[str, str], str] = {}
    for type_name, graphql_type in schema.type_map.items():
        if not isinstance(graphql_type, GraphQLObjectType) or type_name.startswith("__"):
            continue
        for field_name, field in graphql_type.fields.items():
            definition = (field.extensions or {}).get(DEFINITION)
            if (
                isinstance(definition, StrawberryField)
                and not field.args
                and definition.is_basic_field
                and getattr(field.resolve, "_is_default", False)
            ):
                found[(type_name, field_name)] = definition.python_name
    return found


class PlainDataExecution(StrawberryGraphQLCoreExecutionContext):
    """Set `plain` on a subclass per schema (`execution_for`)."""

    plain: ClassVar[dict[tuple[str, str], str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        middleware = self.middleware_manager
        self._short_path = middleware is None or not middleware.middlewares
        # Whether everything selected under a field is plain, by the identity of its field
        # details (graphql-core memoizes sub-selections on it, keeping those lists alive).
        self._plain_selections: dict[int, bool] = {}
        # graphql-core keeps bound methods of the executor here: a reference cycle that
        # leaves each request's executor, context, loaders and rows to the garbage
        # collector instead of freeing them when the response is built.
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=_weakly(self.gather_async_work), track=_weakly(self.track_async_work)
        )

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
    ) -> Any:
        if self._short_path:
            node = field_details_list[0].node
            name = node.name.value
            attribute = self.plain.get((parent_type.name, name))
            if attribute is not None and not node.arguments:
                field_type = parent_type.fields[name].type
                if self._is_plain_selection(field_type, field_details_list):
                    try:
                        completed = self._complete(
                            field_type, getattr(source, attribute), field_details_list
                        )
                    except Exception:  # reported by the ordinary path below
                        completed = FALLBACK
                    if completed is not FALLBACK:
                        return completed
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )

    def _is_plain_selection(self, field_type: GraphQLOutputType, field_details_list: Any) -> bool:
        key = id(field_details_list)
        known = self._plain_selections.get(key)
        if known is None:
            known = self._check_plain_selection(field_type, field_details_list)
            self._plain_selections[key] = known
        return known

    def _check_plain_selection(
        self, field_type: GraphQLOutputType, field_details_list: Any
    ) -> bool:
        named = get_named_type(field_type)
        if isinstance(named, GraphQLScalarType | GraphQLEnumType):
            return True
        if not isinstance(named, GraphQLObjectType):
            return False  # interfaces and unions resolve their type at run time
        grouped, defer_usages, _ = self.collect_subfields(named, field_details_list)
        if defer_usages:
            return False
        for sub_list in grouped.values():
            node = sub_list[0].node
            name = node.name.value
            if name == TYPENAME:
                continue
            if node.arguments or (named.name, name) not in self.plain:
                return False
            if not self._is_plain_selection(named.fields[name].type, sub_list):
                return False
        return True

    def _complete(self, field_type: GraphQLOutputType, value: Any, field_details_list: Any) -> Any:
        if isinstance(field_type, GraphQLNonNull):
            if value is None:
                return FALLBACK
            field_type = field_type.of_type
        elif value is None:
            return None
        if isinstance(field_type, GraphQLScalarType | GraphQLEnumType):
            return self.complete_leaf_value(field_type, value)
        if isinstance(field_type, GraphQLList):
            if not isinstance(value, list | tuple):
                return FALLBACK
            items = []
            for item in value:
                completed = self._complete(field_type.of_type, item, field_details_list)
                if completed is FALLBACK:
                    return FALLBACK
                items.append(completed)
            return items
        if isinstance(field_type, GraphQLObjectType):
            return self._complete_object(field_type, value, field_details_list)
        return FALLBACK

    def _complete_object(
        self, object_type: GraphQLObjectType, value: Any, field_details_list: Any
    ) -> Any:
        # Strawberry's is_type_of checks the Python type and ignores its info argument.
        if object_type.is_type_of is not None and object_type.is_type_of(value, None) is not True:  # type: ignore[arg-type]
            return FALLBACK
        grouped, _, _ = self.collect_subfields(object_type, field_details_list)
        plain = self.plain
        fields = object_type.fields
        result: dict[str, Any] = {}
        for response_name, sub_list in grouped.items():
            name = sub_list[0].node.name.value
            if name == TYPENAME:
                result[response_name] = object_type.name
                continue
            completed = self._complete(
                fields[name].type, getattr(value, plain[(object_type.name, name)]), sub_list
            )
            if completed is FALLBACK:
                return FALLBACK
            result[response_name] = completed
        return result


def _weakly(method: Callable[..., T]) -> Callable[..., T]:
    """`method`, without keeping its object alive (it outlives every call made through it:
    resolvers run while their executor does)."""
    reference = WeakMethod(method)

    def call(*args: Any) -> T:
        bound = reference()
        assert bound is not None, "called after its executor was freed"
        return bound(*args)

    return call


def execution_for(schema: GraphQLSchema, *, default_resolver: Any) -> type[PlainDataExecution]:
    """The execution context class for this schema. No short path if fields are not read
    with plain `getattr` (a custom default resolver)."""
    plain = plain_fields(schema) if default_resolver is getattr else {}
    return type("SchemaExecution", (PlainDataExecution,), {"plain": plain})
