"""Value-keyed reuse of the float64 set-up (geometry, crystal, sources, mosaic) across plans.

A refinement loop or a dataset renderer builds a plan per image, and most images share the detector and
beam (a dataset often shares everything but the orientation). The set-up is a few hundred tiny tensor
operations, as costly as rendering a small image, so each resolver keeps its last few results keyed by the
*values* it reads (never by object identity: an optimizer updates tensors in place; the one exception is
an array that nothing can write to, see `value_key`). `plan.build_plan` keeps whole plans and
`validation.check_config` the sections that passed the same way. Nothing is cached when any input tensor
requires grad: the result must then carry a fresh autograd graph. Cached tensors are
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
    """A value that must not be cached (a tensor that requires grad), or whose key would cost more than the
    reuse saves (a writable array over HASH_LIMIT bytes: a detector mask, a user's own HKL grid)."""


HASH_LIMIT = 1 << 18  # bytes: hashing 256 kB costs ~0.5 ms, a few times a small plan's whole set-up


# a number's key carries its type, and a float's its sign of zero: 8 and 8.0, True and 1, 0.0 and -0.0 are
# different configs to the checks (an int field given a float is refused) even where == calls them equal
_NUMBERS = {bool: lambda x: ("b", x), int: lambda x: ("i", x), float: lambda x: ("f", x.hex())}
_PLAIN = frozenset({str, type(None)})


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def value_key(x: Any) -> Hashable:
    """A hashable key equal for equal values: numbers (with their type), strings, tuples, dataclasses, arrays
    and tensors (by dtype, shape and contents; a read-only array by itself). Raises NotCacheable for a tensor
    that requires grad and for a writable array or tensor over HASH_LIMIT bytes."""
    cls = type(x)
    if cls in _PLAIN:
        return x
    number = _NUMBERS.get(cls)
    if number is not None:
        return number(x)
    if cls is tuple or cls is list:
        return tuple(value_key(v) for v in x)
    if isinstance(x, torch.Tensor):
        if x.requires_grad or x.numel() * x.element_size() > HASH_LIMIT:
            raise NotCacheable
        if x.numel() <= 16:
            return ("t", str(x.dtype), tuple(x.shape), _small(x.detach().cpu().reshape(-1).tolist()))
        return ("t", str(x.dtype), tuple(x.shape), _digest(x.detach().cpu().contiguous().numpy()))
    if isinstance(x, np.ndarray | np.generic):
        a = np.asarray(x)
        if a.size <= 16:
            return ("a", str(a.dtype), a.shape, _small(a.reshape(-1).tolist()))
        if _frozen(a):  # its values cannot change: the array itself stands for them (an HKL grid, 3 ms a hash)
            return ("a", str(a.dtype), a.shape, _Same(a))
        if a.nbytes > HASH_LIMIT:
            raise NotCacheable
        return ("a", str(a.dtype), a.shape, _digest(np.ascontiguousarray(a)))
    for base in (bool, int, float):  # subclasses (numpy's float64 is a float)
        if isinstance(x, base):
            return _NUMBERS[base](base(x))
    if isinstance(x, str):
        return str(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (cls.__name__,) + tuple(value_key(getattr(x, name)) for name in _field_names(cls))
    if isinstance(x, torch.device | torch.dtype):
        return str(x)
    raise NotCacheable


def _frozen(a: np.ndarray) -> bool:
    """Read only, and so is every array under it down to the one that owns the memory (the HKL readers return
    such grids): no write through any view can change its values."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return a is None


class _Same:
    """A key part equal only to itself: the object (kept alive by the key, so its id is never reused)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def _small(values: list) -> tuple:
    """The elements of a small array: floats by their bits (-0.0 is not 0.0), others as they are."""
    return tuple(v.hex() if type(v) is float else v for v in values)


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
