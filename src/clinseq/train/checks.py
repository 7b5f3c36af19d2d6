"""Typed checks of configuration values: a value against an annotation, keywords against a signature.

:func:`check_value` checks (and converts: int → float, tuple → list) a value against the annotations the
config dataclasses and the components' signatures use; :func:`check_kwargs` checks a keyword mapping of a
config (``model.encoder_kwargs``, ``data.sampler_kwargs``, ``method.objective``...) against the signature
of what it will be passed to; :func:`unknown_key` is the error for an unknown name, with the closest valid
one. Every failure is a :class:`~clinseq.errors.ConfigError` naming the dotted config key.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from clinseq.errors import ConfigError

__all__ = ["check_kwargs", "check_value", "unknown_key"]


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, Sequence):
        (arg,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(arg)}"
    if origin in (dict, Mapping):
        return "a mapping"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def check_value(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` (int → float, tuple → list) or raise a ``ConfigError``.

    Supports the annotations used by the config dataclasses and by the components' signatures:
    bool, int, float, str, None, ``X | Y``, ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``,
    ``dict[str, X]`` and ``Any`` (anything goes; the component checks it).
    """
    if tp is Any or tp is typing.Any or tp is dataclasses.MISSING:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return check_value(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise _type_error(key, tp, value)
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise _type_error(key, tp, value)
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise _type_error(key, tp, value)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, tp, value)
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"{key}: expected a list of {len(args)} values, got {len(value)} ({value!r}); "
                    f"e.g. {key}=[{', '.join('…' for _ in args)}]"
                )
            return [
                check_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        arg = args[0] if args else Any
        return [check_value(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(key, tp, value)
        args = typing.get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): check_value(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _type_error(key, tp, value)
    return value  # an annotation we cannot check (e.g. a callable): left to the component


def _type_error(key: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(
        f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}); "
        f"fix the YAML or pass e.g. --set {key}=<{_type_name(tp)}>"
    )


def unknown_key(key: str, name: str, valid: Sequence[str]) -> ConfigError:
    """The error for an unknown ``key`` (its last part ``name``): the closest valid name and all of them."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} valid keys here: {', '.join(sorted(valid))}")


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    target = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations are simply not type-checked
        return {}


def _parameters(fn: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    """Keyword parameters of ``fn`` (``{name: Parameter}``), whether it takes any ``**kwargs``, type hints.

    A class whose ``__init__`` ends in ``**kwargs`` forwards them to its base class (the objectives'
    ``super().__init__(temperature, **kwargs)``): the base classes' parameters are collected too, so
    that a misspelt base option is still caught.
    """
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    chain = (
        [c for c in fn.__mro__ if "__init__" in vars(c) and c is not object] if inspect.isclass(fn) else [fn]
    )
    var_kw = False
    for target in chain:
        sig = inspect.signature(target)
        for n, p in sig.parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self" and n not in params:
                # Base-class parameters the subclass passes positionally are required only once.
                params[n] = (
                    p
                    if target is chain[0]
                    else p.replace(default=None if p.default is p.empty else p.default)
                )
        for n, h in _hints(target).items():
            hints.setdefault(n, h)
        var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        if not var_kw or not inspect.isclass(fn):
            break
    else:
        var_kw = False  # every class forwards **kwargs up to nn.Module, which takes no options
    return params, var_kw, hints


def check_kwargs(
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any],
    key: str,
    *,
    provided: Sequence[str] = (),
    require: bool = True,
) -> None:
    """Raise a ``ConfigError`` unless ``fn(**provided, **kwargs)`` matches ``fn``'s signature.

    Checks that every key is a parameter of ``fn`` (not one the builder ``provided`` itself), that the
    values have the annotated types, and (``require``) that no parameter without a default is missing.
    """
    params, var_kw, hints = _parameters(fn)
    valid = [n for n in params if n not in provided]
    for name, value in kwargs.items():
        if name in provided:
            raise ConfigError(
                f"{key}.{name} is set by clinseq from the rest of the config (it fills "
                f"{', '.join(provided)}); remove it from {key}"
            )
        if name not in params and not var_kw:
            raise unknown_key(f"{key}.{name}", name, valid)
        if name in hints:
            check_value(value, hints[name], f"{key}.{name}")
    if require:
        missing = [
            n for n, p in params.items() if p.default is p.empty and n not in kwargs and n not in provided
        ]
        if missing:
            raise ConfigError(f"{key} lacks required argument(s) {missing} of {getattr(fn, '__name__', fn)}")
