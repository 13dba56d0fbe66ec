"""Strawberry's schema-extension hooks, looked up once per extension class.

Strawberry wraps every hook of every extension again on each request: for each of the four
stages (operation, parsing, validation, execution) and each extension it checks whether the
class overrides the hook, inspects it (generator, async generator or plain function) and
builds a context manager around a bound method, then opens an exit stack even for a stage
no extension hooks into. The answer depends only on the extension's class and the stage,
so it is worked out once here; each request then only binds the prebuilt context manager
factory to its own extension instance, and a stage without hooks costs nothing.

The hooks run exactly as Strawberry runs them: the same ones, in the same order, entered
and exited through the same exit stacks. Plain-function hooks (none of ours) still take
Strawberry's own lookup.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

# (extension class, hook name) -> (context manager factory taking the extension, is_async),
# or None when the class does not override that hook. Bounded by the extension classes.
_Factory = tuple[Callable[[SchemaExtension], Any], bool]
_FACTORIES: dict[tuple[type[SchemaExtension], str], _Factory | None] = {}
_PLAIN = object()  # a plain-function hook: left to Strawberry's lookup


def _factory(owner: type[SchemaExtension], name: str) -> _Factory | object | None:
    hook = getattr(owner, name)
    if hook is getattr(SchemaExtension, name):
        return None
    if inspect.isgeneratorfunction(hook):
        return contextlib.contextmanager(hook), False
    if inspect.isasyncgenfunction(hook):
        return contextlib.asynccontextmanager(hook), True
    return _PLAIN


class _CachedHooks(ExtensionContextManagerBase):
    __slots__ = ()

    def get_hook(self, extension: SchemaExtension) -> WrappedHook | None:
        key = (type(extension), self.HOOK_NAME)
        try:
            found = _FACTORIES[key]
        except KeyError:
            made = _factory(type(extension), self.HOOK_NAME)
            if made is _PLAIN:
                return super().get_hook(extension)
            found = _FACTORIES[key] = made  # type: ignore[assignment]
        if found is None:
            return None
        factory, is_async = found
        return WrappedHook(extension=extension, hook=partial(factory, extension), is_async=is_async)

    async def __aenter__(self) -> None:
        if self.hooks:
            await super().__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self.hooks:
            await super().__aexit__(exc_type, exc_val, exc_tb)

    def __enter__(self) -> None:
        if self.hooks:
            super().__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self.hooks:
            super().__exit__(exc_type, exc_val, exc_tb)


class _Operation(_CachedHooks, OperationContextManager):
    __slots__ = ()


class _Parsing(_CachedHooks, ParsingContextManager):
    __slots__ = ()


class _Validation(_CachedHooks, ValidationContextManager):
    __slots__ = ()


class _Executing(_CachedHooks, ExecutingContextManager):
    __slots__ = ()


class CachedHooksRunner(SchemaExtensionsRunner):
    """Strawberry's runner with the four stages' hooks looked up once per class."""

    def operation(self) -> OperationContextManager:
        return _Operation(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return _Parsing(self.extensions)

    def validation(self) -> ValidationContextManager:
        return _Validation(self.extensions)

    def executing(self) -> ExecutingContextManager:
        return _Executing(self.extensions)
