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
)
from graphql.pyutils import Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

T = TypeVar("T")
# Where Strawberry keeps a GraphQL field's or object type's definition (a type's Python
# class is its `origin`).
DEFINITION = "strawberry-definition"
TYPENAME = "__typename"


class _Fallback:
    """Returned instead of a value: complete this field the ordinary way."""


FALLBACK = _Fallback()
Completer = Callable[[Any], Any]


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
        # A field's completer (None: not plain data), by the identity of its type and field
        # details (graphql-core memoizes sub-selections on those, keeping the lists alive).
        # Completers hold no reference to the executor, so this makes no cycle.
        self._completers: dict[tuple[int, int], Completer | None] = {}
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
                complete = self._completer(parent_type.fields[name].type, field_details_list)
                if complete is not None:
                    try:
                        completed = complete(getattr(source, attribute))
                    except Exception:  # reported by the ordinary path below
                        completed = FALLBACK
                    if completed is not FALLBACK:
                        return completed
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )

    def _completer(
        self, field_type: GraphQLOutputType, field_details_list: Any
    ) -> Completer | None:
        key = (id(field_type), id(field_details_list))
        if key not in self._completers:
            self._completers[key] = self._build(field_type, field_details_list)
        return self._completers[key]

    def _build(
        self, field_type: GraphQLOutputType, field_details_list: Any, non_null: bool = False
    ) -> Completer | None:
        """A function from the field's value to its completed value (or FALLBACK), built
        once per selection; None if anything under the field is not plain data."""
        if isinstance(field_type, GraphQLNonNull):
            return self._build(field_type.of_type, field_details_list, non_null=True)
        if isinstance(field_type, GraphQLScalarType | GraphQLEnumType):
            return _leaf(field_type, non_null)
        if isinstance(field_type, GraphQLList):
            item = self._completer(field_type.of_type, field_details_list)
            return None if item is None else _list_of(item, non_null)
        if not isinstance(field_type, GraphQLObjectType):
            return None  # interfaces and unions resolve their type at run time
        grouped, defer_usages, _ = self.collect_subfields(field_type, field_details_list)
        if defer_usages:
            return None
        fields: list[tuple[str, str, Completer | None]] = []
        for response_name, sub_list in grouped.items():
            node = sub_list[0].node
            name = node.name.value
            if name == TYPENAME:
                fields.append((response_name, field_type.name, None))
                continue
            attribute = self.plain.get((field_type.name, name))
            if attribute is None or node.arguments:
                return None
            complete = self._completer(field_type.fields[name].type, sub_list)
            if complete is None:
                return None
            fields.append((response_name, attribute, complete))
        return _object(field_type, fields, non_null)


# Each completer handles its own null: None for a nullable position; FALLBACK for a non-null
# one, so graphql-core's path reports the error with its location.


def _leaf(leaf_type: GraphQLScalarType | GraphQLEnumType, non_null: bool) -> Completer:
    coerce = leaf_type.coerce_output_value
    null = FALLBACK if non_null else None

    def complete(value: Any) -> Any:
        if value is None:
            return null
        coerced = coerce(value)  # raises on a value the type cannot serialize
        return FALLBACK if coerced is None or coerced is Undefined else coerced

    return complete


def _list_of(item: Completer, non_null: bool) -> Completer:
    null = FALLBACK if non_null else None

    def complete(value: Any) -> Any:
        if value is None:
            return null
        if not isinstance(value, list | tuple):
            return FALLBACK
        items = [item(each) for each in value]
        return FALLBACK if FALLBACK in items else items

    return complete


def _object(
    object_type: GraphQLObjectType, fields: list[tuple[str, str, Completer | None]], non_null: bool
) -> Completer:
    null = FALLBACK if non_null else None
    is_type_of = object_type.is_type_of
    definition = (object_type.extensions or {}).get(DEFINITION)
    # An instance of the type's own class needs no is_type_of call (Strawberry's checks the
    # Python type, and ignores its info argument).
    own_class = getattr(definition, "origin", None)

    def complete(value: Any) -> Any:
        if value is None:
            return null
        if (
            is_type_of is not None
            and type(value) is not own_class
            and is_type_of(value, None) is not True  # type: ignore[arg-type]
        ):
            return FALLBACK
        result: dict[str, Any] = {}
        for response_name, attribute, complete_field in fields:
            if complete_field is None:  # __typename: `attribute` holds the type's name
                result[response_name] = attribute
                continue
            completed = complete_field(getattr(value, attribute))
            if completed is FALLBACK:
                return FALLBACK
            result[response_name] = completed
        return result

    return complete


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
