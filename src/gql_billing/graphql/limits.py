"""Query limits: depth, aliases and cost as one graphql-core validation rule, tokens as a
parse option, both installed by one extension that also caches parsing and validation.

The rule class is made once per schema, never per request: the validation cache keys
on the rule classes, so the per-request limiter extensions (QueryDepthLimiter and friends)
silently miss the cache on every request. Fragments are measured as if expanded, so aliases
hidden in a fragment count wherever it is spread, and a fragment cycle (reported by the
spec's NoFragmentCyclesRule) only stops the walk, never recurses: every walk here uses an
explicit stack.

Cost bounds the work a document asks for before it runs: every field counts once for each
time it can be resolved, so the selection under a paginated field (one taking `first` or
`last`) counts once per item of the page it asks for, multiplied through nesting, and every
alias counts as a field of its own. A page size given by a variable counts as the largest
page, an absent one as the default page. `{ transactions(first: 100) { edges { node { id
kind } } } }` costs 1 + 100 x (edges + node + id + kind) = 401.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from graphql import (
    SKIP,
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    VisitorAction,
    get_named_type,
)
from strawberry.extensions import SchemaExtension
from strawberry.extensions.parser_cache import DEFAULT_MAXSIZE as PARSE_CACHE_SIZE
from strawberry.extensions.parser_cache import _get_parse_cache
from strawberry.extensions.validation_cache import DEFAULT_MAXSIZE as VALIDATE_CACHE_SIZE
from strawberry.extensions.validation_cache import _get_validate_cache

INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})


V = TypeVar("V")


def resolve_spreads(
    root: str,
    done: dict[str, V],
    spreads_of: Callable[[str], Iterable[tuple[Any, ...]]],
    value_of: Callable[[str], V],
) -> None:
    """Fill `done` for `root` and every fragment it spreads, in post-order over the spread
    graph (a fragment's value once its spreads have theirs), without recursion. A spread back
    into the current path (a cycle, which validation reports) is skipped."""
    on_path: set[str] = set()
    stack: list[tuple[str, Iterator[tuple[Any, ...]]]] = []
    if root not in done:
        on_path.add(root)
        stack.append((root, iter(spreads_of(root))))
    while stack:
        name, pending = stack[-1]
        child = next(pending, None)
        if child is None:
            stack.pop()
            on_path.discard(name)
            done[name] = value_of(name)
        elif child[0] not in done and child[0] not in on_path:
            on_path.add(child[0])
            stack.append((child[0], iter(spreads_of(child[0]))))


@dataclass(frozen=True)
class QueryLimits:
    """Per-document limits; the defaults are the documented ones (README, Configuration)."""

    max_depth: int = 10
    max_aliases: int = 30
    # Lexical tokens, comments included: the parser stops at the limit, before any work.
    max_tokens: int = 2000
    # Fields resolved at most, page sizes multiplied through nesting (see the module's doc).
    max_cost: int = 5000
    # The page sizes cost assumes: a variable's is the largest, an absent one the default.
    max_page_size: int = 100
    default_page_size: int = 20


@dataclass(frozen=True)
class Shape:
    """How deep a selection set nests fields, and how many aliases it holds, fragments expanded."""

    depth: int
    aliases: int


@dataclass(frozen=True)
class _Own:
    """A selection set on its own. Each fragment spread is listed with the depth it sits at and
    whether depth counts there (not under introspection); its aliases count everywhere."""

    depth: int
    aliases: int
    spreads: tuple[tuple[str, int, bool], ...]


def _own(selection_set: SelectionSetNode) -> _Own:
    depth = aliases = 0
    spreads: list[tuple[str, int, bool]] = []
    # (selection set, depth of its parent field, whether depth counts there)
    stack: list[tuple[SelectionSetNode, int, bool]] = [(selection_set, 0, True)]
    while stack:
        current, level, counted = stack.pop()
        for selection in current.selections:
            if isinstance(selection, FieldNode):
                aliases += selection.alias is not None
                # Introspection is bounded by MaxIntrospectionDepthRule instead: GraphiQL's own
                # introspection query nests deeper than any data query needs to.
                inside = counted and selection.name.value not in INTROSPECTION_ROOTS
                if inside and not selection.name.value.startswith("__"):
                    depth = max(depth, level + 1)
                if selection.selection_set is not None:
                    stack.append((selection.selection_set, level + 1, inside))
            elif isinstance(selection, InlineFragmentNode):
                stack.append((selection.selection_set, level, counted))
            elif isinstance(selection, FragmentSpreadNode):
                spreads.append((selection.name.value, level, counted))
    return _Own(depth, aliases, tuple(spreads))


class DocumentShapes:
    """Shapes of a document's operations; each fragment is walked once, however often spread."""

    def __init__(self, document: DocumentNode) -> None:
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._own: dict[str, _Own] = {}
        self._shapes: dict[str, Shape] = {}

    def of(self, operation: OperationDefinitionNode) -> Shape:
        own = _own(operation.selection_set)
        for name, _, _ in own.spreads:
            self._resolve(name)
        return self._combine(own)

    def _own_of(self, name: str) -> _Own:
        if name not in self._own:
            fragment = self._fragments.get(name)
            # An unknown fragment is KnownFragmentNamesRule's to report; it adds nothing here.
            self._own[name] = _own(fragment.selection_set) if fragment else _Own(0, 0, ())
        return self._own[name]

    def _resolve(self, root: str) -> None:
        """A spread back into the path (a cycle) adds nothing."""
        resolve_spreads(
            root,
            self._shapes,
            lambda name: self._own_of(name).spreads,
            lambda name: self._combine(self._own_of(name)),
        )

    def _combine(self, own: _Own) -> Shape:
        depth, aliases = own.depth, own.aliases
        for name, level, counted in own.spreads:
            shape = self._shapes.get(name, Shape(0, 0))  # absent: a cycle, cut
            if counted:
                depth = max(depth, level + shape.depth)
            aliases += shape.aliases
        return Shape(depth, aliases)


PAGE_ARGUMENTS = ("first", "last")


@dataclass(frozen=True)
class _Priced:
    """A selection set on its own: the cost of its fields, and each fragment spread with the
    number of times it is resolved there (its cost is added once the fragment is priced)."""

    cost: int
    spreads: tuple[tuple[str, int], ...]


class DocumentCosts:
    """Costs of a document's operations; each fragment is priced once, however often spread
    (its cost does not depend on where: it scales with the page it is spread under)."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, limits: QueryLimits) -> None:
        self._schema = schema
        self._limits = limits
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._own: dict[str, _Priced] = {}
        self._costs: dict[str, int] = {}

    def of(self, operation: OperationDefinitionNode) -> int:
        root = self._schema.get_root_type(operation.operation)
        own = self._price(operation.selection_set, root)
        for name, _ in own.spreads:
            self._resolve(name)
        return self._combine(own)

    def _price(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> _Priced:
        cost = 0
        spreads: list[tuple[str, int]] = []
        # (selection set, the type it selects from, how many times it is resolved)
        stack: list[tuple[SelectionSetNode, GraphQLNamedType | None, int]] = [
            (selection_set, parent, 1)
        ]
        while stack:
            current, parent_type, times = stack.pop()
            for selection in current.selections:
                if isinstance(selection, FieldNode):
                    cost += times
                    definition = _field(parent_type, selection.name.value)
                    if selection.selection_set is not None:
                        child = get_named_type(definition.type) if definition else None
                        page = self._page_size(selection, definition)
                        stack.append((selection.selection_set, child, times * page))
                elif isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    narrowed = self._schema.get_type(condition.name.value) if condition else None
                    stack.append((selection.selection_set, narrowed or parent_type, times))
                elif isinstance(selection, FragmentSpreadNode):
                    spreads.append((selection.name.value, times))
        return _Priced(cost, tuple(spreads))

    def _page_size(self, node: FieldNode, definition: GraphQLField | None) -> int:
        """How many items the field's selection is resolved for: 1 unless it is paginated."""
        if definition is None or not any(a in definition.args for a in PAGE_ARGUMENTS):
            return 1
        sizes = [
            self._argument_size(argument.value)
            for argument in node.arguments or ()
            if argument.name.value in PAGE_ARGUMENTS
        ]
        return max(sizes, default=self._limits.default_page_size)

    def _argument_size(self, value: Any) -> int:
        # A literal beyond the largest page is refused when the field runs; until then it
        # costs the largest page. A variable may be anything up to it.
        if isinstance(value, IntValueNode):
            return max(1, min(int(value.value), self._limits.max_page_size))
        return self._limits.max_page_size

    def _own_of(self, name: str) -> _Priced:
        if name not in self._own:
            fragment = self._fragments.get(name)
            if fragment is None:
                # An unknown fragment is KnownFragmentNamesRule's to report; it costs nothing.
                self._own[name] = _Priced(0, ())
            else:
                condition = self._schema.get_type(fragment.type_condition.name.value)
                self._own[name] = self._price(fragment.selection_set, condition)
        return self._own[name]

    def _resolve(self, root: str) -> None:
        """A spread back into the path (a cycle) costs 0."""
        resolve_spreads(
            root,
            self._costs,
            lambda name: self._own_of(name).spreads,
            lambda name: self._combine(self._own_of(name)),
        )

    def _combine(self, own: _Priced) -> int:
        return own.cost + sum(times * self._costs.get(name, 0) for name, times in own.spreads)


def _field(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = parent.fields.get(name)
        return found
    return None


def limit_error(
    limit: str, measured: int, maximum: int, node: OperationDefinitionNode
) -> GraphQLError:
    return GraphQLError(
        f"Query {limit} {measured} exceeds the maximum of {maximum}",
        [node],
        extensions={"code": "QUERY_TOO_COMPLEX", "limit": limit, "maximum": maximum},
    )


def limits_rule(limits: QueryLimits) -> type[ASTValidationRule]:
    """The depth, alias and cost rule for these limits: call once per schema, not per
    request."""

    class QueryLimitsRule(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> VisitorAction:
            shapes = DocumentShapes(node)
            costs = DocumentCosts(self.context.schema, node, limits)
            for definition in node.definitions:
                if isinstance(definition, OperationDefinitionNode):
                    self._check(definition, shapes.of(definition))
                    self._check_cost(definition, costs.of(definition))
            return SKIP

        def _check(self, operation: OperationDefinitionNode, shape: Shape) -> None:
            if shape.depth > limits.max_depth:
                self.report_error(limit_error("depth", shape.depth, limits.max_depth, operation))
            if shape.aliases > limits.max_aliases:
                self.report_error(
                    limit_error("aliases", shape.aliases, limits.max_aliases, operation)
                )

        def _check_cost(self, operation: OperationDefinitionNode, cost: int) -> None:
            if cost > limits.max_cost:
                self.report_error(limit_error("cost", cost, limits.max_cost, operation))

    return QueryLimitsRule


class PreparedDocuments(SchemaExtension):
    """Strawberry's ParserCache, ValidationCache and the limits in one extension.

    The schema's prebuilt rules and the token limit are added to each operation, then the
    document is parsed and validated through caches keyed by its text (with the token
    limit) and by the parsed document with the rules, as ParserCache and ValidationCache
    do, through the very caches those two use (Strawberry's, one per process). One extension
    with two hooks instead of three extensions: Strawberry builds every extension and looks
    its hooks up again on every request, and a repeated document has nothing else to do here.

    Pass a factory (`PreparedDocuments.factory(...)`): Strawberry gives every request its
    own extension instance; the rule classes and caches inside are shared.
    """

    def __init__(
        self,
        *,
        rules: tuple[type[ASTValidationRule], ...],
        max_tokens: int,
        parse: Callable[..., DocumentNode],
        validate: Callable[..., list[GraphQLError]],
    ) -> None:
        super().__init__()
        self._rules = rules
        self._max_tokens = max_tokens
        self._parse = parse
        self._validate = validate

    @classmethod
    def factory(
        cls, *, rules: Sequence[type[ASTValidationRule]], max_tokens: int
    ) -> Callable[[], PreparedDocuments]:
        cached_parse = _get_parse_cache(PARSE_CACHE_SIZE)
        cached_validate = _get_validate_cache(VALIDATE_CACHE_SIZE)
        shared_rules = tuple(rules)

        def build() -> PreparedDocuments:
            return cls(
                rules=shared_rules,
                max_tokens=max_tokens,
                parse=cached_parse,
                validate=cached_validate,
            )

        build.__name__ = cls.__name__
        return build

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self._max_tokens
        context.validation_rules = (*context.validation_rules, *self._rules)
        # A syntax error (or too many tokens) is raised here, as ParserCache raises it.
        context.graphql_document = self._parse(context.query, **context.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        context.pre_execution_errors = self._validate(
            context.schema._schema, context.graphql_document, context.validation_rules
        )
        yield
