"""OpenAI-style error bodies and the request checks that produce them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

Json = dict[str, Any]

METADATA_MAX_KEYS = 16
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> Json:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found(kind: str, id_: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{id_}'.")


def bad(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def required_str(body: Json, name: str) -> str:
    value = body.get(name)
    if value is None:
        raise bad(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    if not isinstance(value, str):
        raise invalid_type(name, value, "a string")
    return value


def invalid_type(name: str, value: Any, expected: str) -> ApiError:
    return bad(
        f"Invalid type for '{name}': expected {expected}, but got {_json_type(value)} instead.",
        param=name,
        code="invalid_type",
    )


def optional(body: Json, name: str, kind: type[T] | tuple[type, ...], expected: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int subclass; the API rejects `true` where it expects a number.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise invalid_type(name, value, expected)
    if not isinstance(value, kind):
        raise invalid_type(name, value, expected)
    return value


def optional_int(
    body: Json, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    value: int | None = optional(body, name, int, "an integer")
    if value is None:
        return None
    if minimum is not None and value < minimum:
        raise bad(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {minimum}, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if maximum is not None and value > maximum:
        raise bad(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {maximum}, "
            f"but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def optional_number(body: Json, name: str, *, maximum: float) -> float | None:
    value: float | int | None = optional(body, name, (int, float), "a number")
    if value is None:
        return None
    if value < 0 or value > maximum:
        raise bad(f"Invalid '{name}': expected a number between 0 and {maximum:g}.", param=name)
    return float(value)


def metadata(body: Json, name: str = "metadata") -> dict[str, str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(name, value, "an object")
    if len(value) > METADATA_MAX_KEYS:
        raise bad(f"Invalid '{name}': too many properties. Expected at most {METADATA_MAX_KEYS}.", param=name)
    for key, item in value.items():
        if len(key) > METADATA_KEY_MAX:
            raise bad(
                f"Invalid '{name}': key '{key}' is longer than {METADATA_KEY_MAX} characters.", param=name
            )
        if not isinstance(item, str):
            raise invalid_type(f"{name}.{key}", item, "a string")
        if len(item) > METADATA_VALUE_MAX:
            raise bad(f"Invalid '{name}.{key}': string too long.", param=f"{name}.{key}")
    return dict(value)


def reject_unknown(body: Json, allowed: frozenset[str]) -> None:
    for key in body:
        if key not in allowed:
            raise bad(f"Unrecognized request argument supplied: {key}")


def paginate(items: Sequence[T], id_of: Callable[[T], str], query: Any, kind: str) -> tuple[list[T], bool]:
    """The cursor pagination of every Assistants list endpoint: limit, order, after, before."""
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise invalid_type("limit", raw_limit, "an integer") from None
    if not 1 <= limit <= 100:
        raise bad(
            f"Invalid 'limit': expected a value between 1 and 100, but got {limit} instead.", param="limit"
        )
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad(
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [id_of(item) for item in ordered]
    start, stop = 0, len(ordered)
    after, before = query.get("after"), query.get("before")
    if after:
        if after not in ids:
            raise not_found(kind, after)
        start = ids.index(after) + 1
    if before:
        if before not in ids:
            raise not_found(kind, before)
        stop = ids.index(before)
        # `before` pages backwards: the items just ahead of the cursor, still in `order`.
        if not after:
            start = max(0, stop - limit)
            window = ordered[start:stop]
            return window, start > 0
    window = ordered[start:stop]
    return window[:limit], len(window) > limit


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
