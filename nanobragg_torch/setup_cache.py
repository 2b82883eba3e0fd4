"""Value-keyed reuse of the float64 set-up (geometry, crystal, sources, mosaic) across plans.

A refinement loop or a dataset renderer builds a plan per image, and most images share the detector and
beam (a dataset often shares everything but the orientation). The set-up is a few hundred tiny tensor
operations, as costly as rendering a small image, so each resolver keeps its last few results keyed by the
*values* it reads (never by object identity: an optimizer updates tensors in place). Nothing is cached when
any input tensor requires grad: the result must then carry a fresh autograd graph. Cached tensors are
shared between plans and are never modified in place (the plan is immutable).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")
MAX_ENTRIES = 8  # per resolver: a handful of detectors / orientations in flight


class NotCacheable(Exception):
    """A value that must not be cached (a tensor that requires grad)."""


_ATOMS = frozenset({bool, int, float, str, type(None)})


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def value_key(x: Any) -> Hashable:
    """A hashable key equal for equal values: numbers, strings, tuples, dataclasses, arrays and tensors (by
    dtype, shape and contents). Raises NotCacheable for a tensor that requires grad."""
    cls = type(x)
    if cls in _ATOMS:
        return x
    if cls is tuple or cls is list:
        return tuple(v if type(v) in _ATOMS else value_key(v) for v in x)
    if isinstance(x, torch.Tensor):
        if x.requires_grad:
            raise NotCacheable
        if x.numel() <= 16:
            return ("t", str(x.dtype), tuple(x.shape), tuple(x.detach().cpu().reshape(-1).tolist()))
        return ("t", str(x.dtype), tuple(x.shape), _digest(x.detach().cpu().contiguous().numpy()))
    if isinstance(x, np.ndarray | np.generic):
        a = np.asarray(x)
        if a.size <= 16:
            return ("a", str(a.dtype), a.shape, tuple(a.reshape(-1).tolist()))
        return ("a", str(a.dtype), a.shape, _digest(np.ascontiguousarray(a)))
    if isinstance(x, bool | int | float | str):
        return x
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (cls.__name__,) + tuple(value_key(getattr(x, name)) for name in _field_names(cls))
    if isinstance(x, torch.device | torch.dtype):
        return str(x)
    raise NotCacheable


def fields_key(obj: Any, *exclude: str) -> tuple:
    """value_key of a dataclass without the named fields (large arrays a resolver does not read)."""
    return tuple(value_key(getattr(obj, name)) for name in _field_names(type(obj)) if name not in exclude)


def _digest(a: np.ndarray) -> str:
    return hashlib.blake2b(a.view(np.uint8).reshape(-1).data, digest_size=16).hexdigest()


class ValueCache:
    """A small LRU of set-up results keyed by value (`value_key`)."""

    def __init__(self, size: int = MAX_ENTRIES) -> None:
        self.size = size
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The entry of `key` (a value_key), built and stored on a miss."""
        if key in self.entries:
            self.entries.move_to_end(key)
            self.hits += 1
            return self.entries[key]
        self.misses += 1
        value = build()
        self.entries[key] = value
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self.entries.clear()
        self.hits = self.misses = 0


CACHES: dict[str, ValueCache] = {}


def cached(name: str, key: Callable[..., tuple]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a resolver: results reused for arguments whose `key(*args)` values are equal (shallow copies
    of a dataclass result, so that a caller may rebind its fields). Inside a grad-enabled region a result is
    only reused when no key tensor requires grad (value_key refuses those)."""
    cache = CACHES.setdefault(name, ValueCache())

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def run(*args):
            try:
                k = value_key(key(*args))
            except NotCacheable:
                return fn(*args)
            value = cache.get(k, lambda: fn(*args))
            return dataclasses.replace(value) if dataclasses.is_dataclass(value) else value

        run.cache = cache  # type: ignore[attr-defined]
        return run

    return wrap


def clear_all() -> None:
    """Forget every cached set-up (tests; memory)."""
    for cache in CACHES.values():
        cache.clear()
