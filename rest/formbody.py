"""Form-encoded requests (``application/x-www-form-urlencoded``) of the creating POSTs.

OMA REST_NetAPI_Common (Appendix C, form encoding): flat leaf names, a name
repeated for an array. docs/rest-formats.md describes the flattening this
module implements:

* A field is named by its leaf element name (``text``, ``notifyURL``) or by its
  dotted path from the root (``callbackReference.notifyURL``); a leaf name that
  two paths share must be given dotted.
* A repeated name is an array (``reportRequest=Delivered&reportRequest=Displayed``);
  a name repeated that is not an array is refused.
* Inside an array of structures (``participant`` of ``participantList`` or
  ``groupChatSessionInformation``) the n-th occurrence of each leaf belongs
  to the n-th structure: ``address=tel:+1…&name=Ann&address=tel:+2…&name=Bob``.
* A choice of root (``chatMessage`` or ``isComposing`` on ``…/messages``;
  ``participantInformation`` or ``participantList`` on ``…/participants``) goes
  to the first root, in that order, that holds every given name without
  refusing one (a single ``address`` is a ``participantInformation``, a
  repeated one a ``participantList``).

The values are then validated by the model exactly as JSON strings are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel

from rest.xmlbody import fields_by_name

MAX_FIELDS = 1000
"""Most name=value pairs accepted in one form."""


class FormError(ValueError):
    """The form cannot be read as the expected root (the message says why)."""


@dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]
    repeats: bool
    """The leaf itself is an array of values."""
    item_of: int | None
    """Index in ``path`` of an array of structures holding the leaf, if any."""


def _leaves(
    model: type[BaseModel], prefix: tuple[str, ...] = (), item_of: int | None = None
) -> list[_Leaf]:
    out: list[_Leaf] = []
    for name, (repeats, kind) in fields_by_name(model).items():
        path = (*prefix, name)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            inner = item_of
            if repeats and inner is None:
                inner = len(path) - 1
            out.extend(_leaves(kind, path, inner))
        else:
            out.append(_Leaf(path, repeats, item_of))
    return out


def _resolve(leaves: list[_Leaf], name: str) -> _Leaf:
    dotted = tuple(name.split("."))
    exact = [leaf for leaf in leaves if leaf.path == dotted]
    if exact:
        return exact[0]
    by_leaf = [leaf for leaf in leaves if leaf.path[-len(dotted) :] == dotted]
    if not by_leaf:
        raise FormError(f"unknown field {name!r}")
    if len(by_leaf) > 1:
        paths = ", ".join(".".join(leaf.path) for leaf in by_leaf)
        raise FormError(f"field {name!r} is ambiguous: name one of {paths}")
    return by_leaf[0]


def _place(data: dict[str, Any], leaf: _Leaf, values: list[str], name: str) -> None:
    if leaf.item_of is None:
        if len(values) > 1 and not leaf.repeats:
            raise FormError(f"field {name!r} must not repeat")
        node = data
        for step in leaf.path[:-1]:
            node = node.setdefault(step, {})
        node[leaf.path[-1]] = values if leaf.repeats else values[0]
        return
    if leaf.repeats:
        raise FormError(f"field {name!r}: arrays inside repeated structures cannot be flattened")
    node = data
    for step in leaf.path[: leaf.item_of]:
        node = node.setdefault(step, {})
    items: list[dict[str, Any]] = node.setdefault(leaf.path[leaf.item_of], [])
    while len(items) < len(values):
        items.append({})
    for item, value in zip(items, values, strict=False):
        inner = item
        for step in leaf.path[leaf.item_of + 1 : -1]:
            inner = inner.setdefault(step, {})
        inner[leaf.path[-1]] = value


def form_data(pairs: list[tuple[str, str]], model: type[BaseModel]) -> dict[str, Any]:
    """The JSON-shaped content of a form read as ``model`` (not validated yet)."""
    leaves = _leaves(model)
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    data: dict[str, Any] = {}
    for name, values in grouped.items():
        _place(data, _resolve(leaves, name), values, name)
    return data


def read_form(data: bytes, models: Mapping[str, type[BaseModel]]) -> tuple[str, dict[str, Any]]:
    """(root, JSON-shaped content) of a form body whose root is decided per the module rules."""
    try:
        text = data.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"malformed form body: {exc}") from None
    errors: list[str] = []
    for root, model in models.items():
        try:
            return root, form_data(pairs, model)
        except FormError as exc:
            errors.append(f"{root}: {exc}")
    raise FormError("; ".join(errors))
