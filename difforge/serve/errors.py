"""API errors: every answer other than 200 is ``{"detail": "FIELD: what is wrong", "field": FIELD}``."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional


class ApiError(Exception):
    """An answer other than 200: the status, the field at fault (if one) and a one-line message."""

    def __init__(self, status: int, field: Optional[str], message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers

    def body(self) -> Dict[str, Any]:
        return {"detail": f"{self.field}: {self.message}" if self.field else self.message, "field": self.field}


def one_line_validation_error(exc) -> ApiError:
    """FastAPI's list of validation errors -> the first, as ``field: message (got value)``."""
    errs = exc.errors()
    if not errs:
        return ApiError(422, "body", "invalid request")

    def field_of(err) -> str:  # the request's fields are flat; deeper parts of a loc name union members
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        return {"class_": "class"}.get(loc[0], loc[0]) if loc else "body"

    e, field = errs[0], field_of(errs[0])
    msg = re.sub(r"^Value error, ", "", str(e.get("msg", "invalid value")))
    if field == "class":  # a union: its members' messages would only confuse
        msg = 'must be a class name, a class index, "all" or null'
    if e.get("type") == "json_invalid":
        field, msg = "body", f"not valid JSON ({msg})"
    got = e.get("input")
    if e.get("type") not in ("missing", "json_invalid", "value_error") and isinstance(got, (int, float, str, bool, type(None))):
        r = repr(got)
        msg += f" (got {r if len(r) <= 40 else r[:37] + '...'})"
    others = sorted({field_of(x) for x in errs} - {field})
    more = f" [also: {', '.join(others)}]" if others else ""
    return ApiError(422, field, msg.replace("\n", " ") + more)
