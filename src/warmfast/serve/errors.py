"""Errors in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}, with the status
the `openai` SDK maps to its exception types (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 429 RateLimitError, 503 InternalServerError ...)."""
from __future__ import annotations

from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
         501: "not_implemented_error", 503: "service_unavailable"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def from_validation(errors: list[dict]) -> APIError:
    """pydantic's errors of a request body -> one 400 naming the first bad field and its value."""
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = f"unknown field {param!r}"
    elif first.get("type") == "json_invalid":
        msg = "the body is not valid JSON"
    elif "input" in first and param:
        msg = f"{param}: {msg} (got {first['input']!r})"[:500]
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return APIError(400, msg + more, param=param)
