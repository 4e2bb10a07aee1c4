"""The Offload API over HTTP, as the commands call it: one httpx client with the token, and every
answer that is not a success turned into one line and its exit code."""

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from offload.cli.output import ExitCode, fail

if TYPE_CHECKING:
    import httpx

DEFAULT_API_PORT = 8000


def default_api_url() -> str:
    """The local system's API: 127.0.0.1 on OFFLOAD_API_PORT (8000)."""
    return f"http://127.0.0.1:{os.environ.get('OFFLOAD_API_PORT', DEFAULT_API_PORT)}"


UNREACHABLE_HINT = (
    "is the local system running (`offload run`)? Elsewhere, pass --api URL or export "
    "OFFLOAD_API_URL (or OFFLOAD_API_PORT)"
)


@dataclass
class Session:
    """What the root command's options give every subcommand."""

    api_url: str
    token: str | None
    # What the dlq commands run on; None: composed from --stack or the local system. Tests pass
    # their own (CliRunner.invoke(app, ..., obj=offload)).
    offload: Any = None

    def api(self) -> "Api":
        return Api(self.api_url, self.token)


class Api:
    def __init__(self, url: str, token: str | None, timeout: float = 30) -> None:
        import httpx  # here: its import takes a while, and `offload --help` needs none of it

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.token_given = bool(token)
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        expected: tuple[int, ...] = (200, 201, 202, 204),
    ) -> Any:
        """The answer's JSON (None when it has no body); any other answer exits with its code.
        `path` may be a full URL of this API (a status_url it gave)."""
        answer = self.client.request(method, path, params=params, json=json)
        if answer.status_code in expected:
            return answer.json() if answer.content else None
        self.refuse(method, path, answer)

    def refuse(self, method: str, path: str, answer: "httpx.Response") -> None:
        status, detail = answer.status_code, _detail(answer)
        route = f"{method} {answer.request.url.path}"
        if status == 401:
            why = "refused the token" if self.token_given else "wants a token"
            fail(
                f"the API at {self.url} {why} (401): pass --token or export OFFLOAD_API_TOKEN "
                "(the one `offload run` was started with)",
                ExitCode.DENIED,
            )
        if status == 403:
            fail(f"the API at {self.url} refused {route} (403): {detail}", ExitCode.DENIED)
        if status in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
            # FastAPI's answer for a route it does not have, not for a missing task
            fail(
                f"the API at {self.url} has no route {route}: is it an older Offload?",
                ExitCode.NOT_FOUND,
            )
        if status == 404:
            fail(detail, ExitCode.NOT_FOUND)
        if status == 409:
            fail(detail, ExitCode.CONFLICT)
        if status == 422:
            fail(f"{route}: {detail}", ExitCode.USAGE)
        fail(f"{route} answered {status}: {detail}", ExitCode.FAILED)


def _detail(answer: "httpx.Response") -> str:
    """FastAPI's `detail`: a sentence, or the validation errors as `field: message`."""
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        return answer.text[:300] or answer.reason_phrase
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', [])[1:])}: {error.get('msg')}"
            for error in detail
            if isinstance(error, dict)
        )
    return str(detail) if detail else answer.reason_phrase
