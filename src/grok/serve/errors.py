"""Request errors in the OpenAI error format: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error", 503: "overloaded"}


class RequestError(Exception):
    """A request the server refuses: the HTTP status, the field at fault (`param`) and a message naming it."""

    def __init__(
        self,
        status: int,
        param: str | None,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.param = param
        self.message = f"{param}: {message}" if param else message
        self.code = code
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI clients parse into their error classes."""
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """`{"error": {...}}` for any status."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
