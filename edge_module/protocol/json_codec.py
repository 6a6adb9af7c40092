"""JSON in and out of ``/score``: orjson first, the standard library where orjson is stricter."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import Any

import numpy as np
import orjson

from edge_module.runtime import BadInputError, ScoringError

OPT_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_OPT_LENIENT = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def loads_json(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a request body; :class:`BadInputError` with the parse error when it is not JSON.

    orjson rejects what Python's ``json.dumps`` writes by default for non-finite floats (``NaN``,
    ``Infinity``) and integers beyond 64 bits; v1 clients send those, so the standard library gets
    a second look before the body is refused.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:
            text = body if isinstance(body, str) else bytes(body).decode("utf-8")
            return json.loads(text)
        except UnicodeDecodeError as exc:
            raise BadInputError(f"malformed JSON body: not UTF-8 ({exc})") from None
        except ValueError as exc:
            if not text.strip():
                raise BadInputError("malformed JSON body: the body is empty") from None
            raise BadInputError(f"malformed JSON body: {exc}") from None
        except RecursionError:
            raise BadInputError(f"malformed JSON body: {fast_error}") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, _dt.date | _dt.time):
        return obj.isoformat()
    pd = sys.modules.get("pandas")  # only when the script itself uses pandas
    if pd is not None:
        if isinstance(obj, pd.DataFrame):
            return obj.to_dict(orient="records")
        if isinstance(obj, pd.Series | pd.Index):
            return obj.tolist()
        if obj is pd.NaT:
            return None
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dumps_result(value: Any, what: str = "run()") -> bytes:
    """Encode a scoring result as JSON as v1 did (``json.dumps(result)``: a str becomes a JSON string),
    also taking numpy arrays and scalars, pandas frames (as records) and series, sets and dates.
    A value that cannot be encoded is a :class:`ScoringError` (500) naming its type."""
    try:
        return orjson.dumps(value, option=OPT_NUMPY)
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return orjson.dumps(value, default=_default, option=_OPT_LENIENT)
    except (orjson.JSONEncodeError, TypeError) as exc:
        hint = ""
        if isinstance(value, bytes | bytearray | memoryview):
            hint = "; to send binary data, decorate run() with @rawhttp and return an AMLResponse"
        raise ScoringError(
            f"{what} returned a {type(value).__name__} that cannot be serialised to JSON: {exc}{hint}"
        ) from exc
