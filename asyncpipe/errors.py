"""Errors, arranged by what the caller can do about them (the way httpx arranges its own).

- :class:`UserError`: the input or the options are wrong. The user fixes them; exit code 2.
- :class:`APIRefusal`: the API said no, and retrying cannot change it. Two kinds, by what follows:

  - :class:`FatalAPIError`: the refusal covers the whole run (bad key, unknown model, exhausted quota).
    The run stops at once, keeps finished work, exit code 1.
  - :class:`RequestRejected`: the API refused one request for its content (400, 413, 422). That row is
    unscored with the reason; other rows go on.
- :class:`RetryableAPIError`: a passing fault (rate limit, 5xx, timeout, broken connection, a reply that
  cannot be parsed). The retry policy owns it; it never reaches the user unless retries run out.

Every message is one line, written for the person at the terminal, and never holds the API key.
"""

from __future__ import annotations


class AsyncpipeError(Exception):
    """Base of every error asyncpipe raises on purpose."""

    exit_code = 1


class UserError(AsyncpipeError):
    """Bad input or options: fixable by the user. Exit code 2."""

    exit_code = 2


class APIRefusal(AsyncpipeError):
    """The API said no, and asking again the same way cannot change that. ``status`` is the HTTP
    status, ``code`` the error code the API gave (e.g. ``insufficient_quota``), when there were any."""

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class FatalAPIError(APIRefusal):
    """The API refused for good (401, 403, 404, 400, insufficient quota). Exit code 1."""


class RequestRejected(APIRefusal):
    """The API refused this one request (HTTP 400, 413, 422: a content filter, a prompt over the
    context length). Retrying the same request cannot help, but other requests may well succeed: a
    classify request ends as an unscored row with the reason; a describe request stops the run."""


class RetryableAPIError(AsyncpipeError):
    """A passing fault. ``retry_after`` is the server's hint in seconds, when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        rate_limited: bool = False,
        no_logprobs: bool = False,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.rate_limited = rate_limited
        #: a 200 answer without logprobs: passing for a flaky server, permanent for one that never sends them
        self.no_logprobs = no_logprobs
        #: no answer within --timeout: the request was abandoned (the server may still be working on it)
        self.timed_out = timed_out


class BatchFilesWritten(AsyncpipeError):
    """``--batch-api export`` wrote the request files for an offline engine: the run stops there on
    purpose, saying how to run them and how to continue. Exit code 0."""

    exit_code = 0
