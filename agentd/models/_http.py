"""Real providers over HTTP: the trio adapter that moves bytes between httpx2 and the sans-io stream parsers.

One `HttpModel.stream` call is one answer. Each attempt POSTs the body that
`_openai_stream` / `_anthropic_stream` build and feeds the response's bytes
through `SSEDecoder` into that provider's parser. What is left here is what
only a network has: HTTP statuses and broken connections turned into errors a
user can act on, retries with backoff while nothing of the answer has gone out,
and the provider's idle timeout on every wait for its bytes.

The API key is read from the environment when the request is made and goes
nowhere but the request's headers: it is scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import httpx2
import trio

from agentd import __version__
from agentd.redact import redact

from . import _anthropic_stream, _openai_stream
from ._base import Finish, ModelError, ModelRequest, Retrying, StreamPart
from ._config import ConfigError, ProviderConfig, basic_token
from ._sse import EventTooLarge, ServerSentEvent, SSEDecoder

__all__ = ["ErrorKind", "HttpModel", "ProviderError", "open_http_client"]

ANTHROPIC_VERSION: Final = "2023-06-01"
DEFAULT_ANTHROPIC_MAX_TOKENS: Final = 4096  # the API requires max_tokens; a model's own limit is often higher
RETRY_AFTER_CAP: Final = 120.0  # seconds: a longer Retry-After is waited out only this long

# httpx2's read timeout is per read and would cut a model that thinks quietly
# for a while; our own idle timeout rules reads, so httpx2 only bounds the
# connect and the writes. No pool limit: concurrency is bounded by the runs.
_TIMEOUT: Final = httpx2.Timeout(connect=15.0, read=None, write=60.0, pool=None)
_LIMITS: Final = httpx2.Limits(max_connections=None, max_keepalive_connections=8, keepalive_expiry=30.0)

# httpx2 logs each request's URL at info, and httpcore2 each exchange with its
# response headers at debug: a provider's echo of a secret and the whole
# conversation are not for agentd's log, at any level. Our own errors say what failed.
for _name in ("httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_ERROR_BODY_LIMIT: Final = 64 * 1024  # bytes of an error response worth reading
_DETAIL_LIMIT: Final = 300  # characters of a provider's message worth showing
_DRAIN_AFTER_FINISH: Final = 0.25  # seconds to read what follows the answer ([DONE]) so the connection is reused

# How the providers say "the prompt does not fit": OpenAI's code
# context_length_exceeded and "maximum context length is N tokens", Anthropic's
# "prompt is too long: N tokens > M maximum" and "... exceed context limit",
# llama.cpp's "exceeds the available context size", vLLM's OpenAI wording.
_TOO_LONG: Final = re.compile(
    r"context[ _-]?(length|window|size|limit)|maximum context|too long|too many tokens"
    r"|exceeds? the (available )?context",
    re.IGNORECASE,
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# A 429 that waiting does not cure: OpenAI's insufficient_quota, Anthropic's spend limits.
_OUT_OF_QUOTA: Final = re.compile(r"insufficient_quota|spend_limit|exceeded your current quota", re.IGNORECASE)
# Error events inside a 200 stream that are load, not a bad request: worth another try
# while nothing of the answer has gone out.
_TRANSIENT_STREAM_ERRORS: Final = frozenset(
    {"api_error", "overloaded_error", "rate_limit_error", "server_error", "rate_limit_exceeded"}
)

ErrorKind = Literal[
    "config",  # no API key in the environment
    "connect",  # nothing answers at base_url: a configuration problem, not load
    "auth",  # 401 / 403
    "not_found",  # 404: the model, or base_url
    "context_length",  # the conversation does not fit the model
    "quota",  # a 429 that waiting does not cure
    "rejected",  # any other refusal of the request
    "rate_limited",  # 429
    "overloaded",  # 529
    "server_error",  # 5xx, 408, 409
    "connection_lost",  # the connection closed before any of the answer came
    "broken",  # the connection broke mid-answer
    "idle_timeout",  # the provider sent nothing for idle_timeout seconds
    "timeout",  # httpx2's connect or write timeout
    "stream_error",  # an error event in the stream, or a stream we cannot read
    "bad_response",  # a 200 that is not an event stream
]


class ProviderError(ModelError):
    """A provider failed the request. The message is for the user; `kind` and `retryable` are for code.

    `reason` is the short form a Retrying part carries ("rate limited (429)");
    `retry_after` is the wait the provider asked for, in seconds, if it did.
    """

    def __init__(
        self,
        message: str,
        kind: ErrorKind,
        *,
        retryable: bool = False,
        reason: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.retryable = retryable
        self.reason = reason or kind
        self.retry_after = retry_after
        self.status = status

    def _replace(self, message: str, *, retryable: bool) -> ProviderError:
        return ProviderError(
            message,
            self.kind,
            retryable=retryable,
            reason=self.reason,
            retry_after=self.retry_after,
            status=self.status,
        )


def open_http_client() -> httpx2.AsyncClient:
    """A connection pool for one provider, kept for the daemon's life: `async with open_http_client() as client`."""
    return httpx2.AsyncClient(
        timeout=_TIMEOUT,
        limits=_LIMITS,
        headers={"user-agent": f"agentd/{__version__}"},
        follow_redirects=False,  # a redirected POST is a misconfigured base_url: say so, do not guess
    )


class _Parser(Protocol):
    def feed(self, event: ServerSentEvent) -> list[StreamPart]: ...

    def finish(self) -> list[StreamPart]: ...


class _MessagesParser:
    """MessagesStream takes an event's name and data apart; this gives it _Parser's shape."""

    def __init__(self) -> None:
        self._stream = _anthropic_stream.MessagesStream()

    def feed(self, event: ServerSentEvent) -> list[StreamPart]:
        return self._stream.feed(event.event, event.data)

    def finish(self) -> list[StreamPart]:
        return self._stream.finish()


_StreamError = _openai_stream.ProviderStreamError | _anthropic_stream.ProviderStreamError
_STREAM_ERRORS: Final = (_openai_stream.ProviderStreamError, _anthropic_stream.ProviderStreamError)


class HttpModel:
    """A model behind an OpenAI Chat Completions or Anthropic Messages API, streamed over `client`."""

    uses_history = True

    def __init__(
        self,
        provider: ProviderConfig,
        model: str,
        client: httpx2.AsyncClient,
        *,
        max_output_tokens: int | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        if provider.type not in ("openai", "anthropic"):
            raise ValueError(f"provider {provider.name!r} has an unknown type {provider.type!r}")
        self.name = f"{provider.name}/{model}"
        self._provider = provider
        self._model = model
        self._client = client
        self._max_output_tokens = max_output_tokens
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        path = "/chat/completions" if provider.type == "openai" else "/v1/messages"
        self._url = provider.url + path  # the userinfo goes in a header, never into a URL we log or show

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamPart, None]:
        """The answer's parts as they arrive, a Retrying before each new attempt; failures raise ProviderError."""
        key = self._api_key()
        body = self._body(request)
        headers = self._headers(key)
        secrets = self._provider.secrets(key)
        attempt = 1
        while True:
            try:
                async with aclosing(self._attempt(body, headers)) as parts:
                    async for part in parts:
                        yield part
                return
            except ProviderError as exc:
                failure = _scrubbed(exc, secrets)
            if not failure.retryable:
                raise failure
            if attempt > self._provider.max_retries:
                if attempt == 1:
                    raise failure._replace(failure.message, retryable=False)  # retrying is turned off
                raise failure._replace(f"{failure.message} (gave up after {attempt} tries)", retryable=False)
            delay = self._delay(failure, attempt)
            attempt += 1
            yield Retrying(attempt, delay, failure.reason)
            await trio.sleep(delay)

    # --- one attempt ---------------------------------------------------------------------------------

    async def _attempt(self, body: bytes, headers: httpx2.Headers) -> AsyncGenerator[StreamPart, None]:
        """One POST and its answer. Raises ProviderError, retryable only while nothing has been yielded."""
        # Leaving this block closes the response. Cancelled or not, that is at
        # once: httpcore2 shields only the socket's close, which does not wait.
        async with AsyncExitStack() as stack:
            response = await self._send(stack, body, headers)
            if not 200 <= response.status_code < 300:
                raise self._refusal(response, await self._error_body(response))
            media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if media_type in ("application/json", "text/html"):
                raise self._not_a_stream(media_type, await self._error_body(response))

            decoder = SSEDecoder()
            parser: _Parser = (
                _openai_stream.ChatCompletionsStream() if self._provider.type == "openai" else _MessagesParser()
            )
            chunks = await stack.enter_async_context(aclosing(response.aiter_bytes()))
            answered = False
            while (chunk := await self._next_chunk(chunks, answered)) is not None:
                try:
                    events = decoder.feed(chunk)
                except EventTooLarge as exc:
                    raise ProviderError(
                        f"provider {self._provider.name!r} sent {exc} in its event stream; that is not a"
                        " model's answer (is base_url a Chat Completions or Messages endpoint?)",
                        "bad_response",
                    ) from None
                for event in events:
                    try:
                        parts = parser.feed(event)
                    except _STREAM_ERRORS as exc:
                        raise self._stream_error(exc, answered) from None
                    for part in parts:
                        answered = True
                        yield part
                        if isinstance(part, Finish):
                            await _drain(chunks)
                            return
            try:
                parts = [part for event in decoder.close() for part in parser.feed(event)] + parser.finish()
            except _STREAM_ERRORS as exc:
                # The body ended cleanly but the answer did not: the server (or a proxy) hung up early.
                raise self._broken(exc.message, answered) from None
            for part in parts:
                yield part

    async def _send(self, stack: AsyncExitStack, body: bytes, headers: httpx2.Headers) -> httpx2.Response:
        """POST and wait for the response's headers; the response stays open on `stack`."""
        name = self._provider.name
        idle = self._provider.idle_timeout
        with trio.CancelScope() as waiting:

            async def on_trace(event: str, info: dict[str, Any]) -> None:
                # Connecting and sending are bounded by httpx2's own timeouts; once
                # the request is out, the provider owes us bytes within `idle`.
                if event.endswith("receive_response_headers.started"):
                    waiting.deadline = trio.current_time() + idle

            try:
                return await stack.enter_async_context(
                    self._client.stream(
                        "POST",
                        self._url,
                        content=body,
                        headers=headers,
                        timeout=_TIMEOUT,
                        extensions={"trace": on_trace},
                    )
                )
            except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.ProxyError, httpx2.UnsupportedProtocol) as exc:
                raise ProviderError(
                    f"cannot connect to provider {name!r} at {self._provider.url}: {_connect_reason(exc)}",
                    "connect",
                ) from None
            except (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError) as exc:
                # Typically a pooled keep-alive connection the server had already closed.
                raise ProviderError(
                    f"provider {name!r} closed the connection before answering: {_describe(exc)}",
                    "connection_lost",
                    retryable=True,
                    reason="connection lost",
                ) from None
            except httpx2.TimeoutException as exc:
                raise ProviderError(f"provider {name!r} timed out: {_describe(exc)}", "timeout") from None
            except httpx2.RequestError as exc:
                raise ProviderError(
                    f"cannot send the request to provider {name!r}: {_describe(exc)}", "rejected"
                ) from None
        raise self._idle()  # only `waiting` can end the block without a return or a raise

    async def _next_chunk(self, chunks: AsyncIterator[bytes], answered: bool) -> bytes | None:
        """The body's next bytes, None at its end; never waits more than the idle timeout."""
        with trio.move_on_after(self._provider.idle_timeout):
            try:
                return await anext(chunks, None)
            except httpx2.RequestError as exc:  # ReadError, RemoteProtocolError (incomplete chunked body), ...
                raise self._broken(_describe(exc), answered) from None
        raise self._idle()

    async def _error_body(self, response: httpx2.Response) -> bytes:
        """The start of a refusal's body, for the provider's message; whatever arrives in time."""
        body = bytearray()
        async with aclosing(response.aiter_bytes()) as chunks:
            with trio.move_on_after(self._provider.idle_timeout):
                try:
                    async for chunk in chunks:
                        body += chunk
                        if len(body) >= _ERROR_BODY_LIMIT:
                            break
                except httpx2.RequestError:
                    pass  # the status says what went wrong; the body only adds detail
        return bytes(body[:_ERROR_BODY_LIMIT])

    # --- what went wrong, in words ---------------------------------------------------------------------

    def _refusal(self, response: httpx2.Response, body: bytes) -> ProviderError:
        status = response.status_code
        name = self._provider.name
        detail = _error_detail(body)
        text = body.decode("utf-8", "replace")
        retryable, reason, kind = _retry_policy(status, text)
        should_retry = response.headers.get("x-should-retry", "").lower()
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"  # the provider knows best (OpenAI and Anthropic send it)
        suffix = f": {detail}" if detail else ""

        if status in (401, 403):
            if self._provider.api_key_env is None:
                hint = "it has no api_key_env, so no key was sent"
            else:
                hint = f"check ${self._provider.api_key_env}"
            return ProviderError(f"authentication failed for provider {name!r} ({hint}){suffix}", "auth", status=status)
        if status == 404:
            if detail:
                return ProviderError(
                    f"model {self._model!r} not found at provider {name!r} ({detail})", "not_found", status=status
                )
            return ProviderError(
                f"model {self._model!r} not found at provider {name!r}"
                f" (404 from {self._url}: check the model name and base_url)",
                "not_found",
                status=status,
            )
        if status == 413 or (status in (400, 422) and _TOO_LONG.search(text)):
            return ProviderError(
                f"the conversation is too long for model {self._model!r} ({detail or f'HTTP {status}'})",
                "context_length",
                status=status,
            )
        if kind == "quota":
            return ProviderError(
                f"provider {name!r} refused: out of quota (HTTP {status}){suffix}", "quota", status=status
            )
        if kind == "rejected":
            return ProviderError(
                f"provider {name!r} rejected the request (HTTP {status} {response.reason_phrase}){suffix}",
                "rejected",
                retryable=retryable,
                reason=f"HTTP {status}",
                status=status,
            )
        return ProviderError(
            f"provider {name!r} failed: {reason}{suffix}",
            kind,
            retryable=retryable,
            reason=reason,
            retry_after=_retry_after(response.headers),
            status=status,
        )

    def _not_a_stream(self, media_type: str, body: bytes) -> ProviderError:
        detail = _error_detail(body)
        return ProviderError(
            f"provider {self._provider.name!r} answered with {media_type}, not an event stream"
            + (f": {detail}" if detail else ""),
            "bad_response",
        )

    def _stream_error(self, exc: _StreamError, answered: bool) -> ProviderError:
        if isinstance(exc, _openai_stream.ProviderStreamError):
            codes = {exc.type, exc.code}
        else:
            codes = {exc.error_type}
        if _TOO_LONG.search(exc.message) or "context_length_exceeded" in codes:
            return ProviderError(f"the conversation is too long for model {self._model!r} ({exc})", "context_length")
        transient = sorted(code for code in codes if code in _TRANSIENT_STREAM_ERRORS)
        return ProviderError(
            f"provider {self._provider.name!r}: {exc}",
            "stream_error",
            retryable=bool(transient) and not answered,
            reason=f"provider error ({transient[0]})" if transient else None,
        )

    def _broken(self, detail: str, answered: bool) -> ProviderError:
        name = self._provider.name
        if answered:
            return ProviderError(f"the connection to provider {name!r} broke mid-answer: {detail}", "broken")
        return ProviderError(
            f"the connection to provider {name!r} broke before the answer began: {detail}",
            "connection_lost",
            retryable=True,
            reason="connection lost",
        )

    def _idle(self) -> ProviderError:
        return ProviderError(
            f"provider {self._provider.name!r} sent nothing for {self._provider.idle_timeout:g} s", "idle_timeout"
        )

    # --- the request ---------------------------------------------------------------------------------

    def _api_key(self) -> str | None:
        try:
            return self._provider.api_key()
        except ConfigError as exc:
            # It names the provider and the variable, never a value.
            raise ProviderError(str(exc), "config") from None

    def _body(self, request: ModelRequest) -> bytes:
        if self._provider.type == "openai":
            body = _openai_stream.build_chat_request(
                request, self._model, self._max_output_tokens, max_tokens_field=self._provider.max_tokens_field
            )
        else:
            max_tokens = self._max_output_tokens or DEFAULT_ANTHROPIC_MAX_TOKENS
            body = _anthropic_stream.build_messages_request(request, self._model, max_tokens)
        return _encoded(body)

    def _headers(self, key: str | None) -> httpx2.Headers:
        headers = httpx2.Headers({"content-type": "application/json", "accept": "text/event-stream"})
        if self._provider.type == "anthropic":
            if key is not None:
                headers["x-api-key"] = key
            headers["anthropic-version"] = ANTHROPIC_VERSION
        elif key is not None:
            headers["authorization"] = f"Bearer {key}"
        credentials = self._provider.url_credentials
        if credentials is not None:
            # What an HTTP client makes of `https://user:pass@host` (and over a key, as it did),
            # done here so that no URL with a password in it reaches the client's own logs.
            headers["authorization"] = "Basic " + basic_token(*credentials)
        # The configuration has the last word: a proxy's own auth, a newer anthropic-version.
        for header, value in self._provider.headers.items():
            headers[header] = value
        return headers

    def _delay(self, failure: ProviderError, attempt: int) -> float:
        if failure.retry_after is not None:
            return failure.retry_after
        # Exponential backoff with full jitter: many clients retrying at once spread out.
        return random.uniform(0.0, min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1)))


def _encoded(body: dict[str, Any]) -> bytes:
    """The request's JSON as UTF-8. A lone surrogate, which UTF-8 cannot encode, is sent as U+FFFD."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Python's own way of carrying undecodable bytes (a file name listed,
        # a command's output) is lone surrogates; sent as they are, they would
        # fail this request and every later one of the session.
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def _retry_policy(status: int, body: str) -> tuple[bool, str, ErrorKind]:
    """Whether a refusal is worth another try, its short reason, and its kind."""
    if status == 429:
        if _OUT_OF_QUOTA.search(body):
            return False, f"out of quota ({status})", "quota"
        return True, f"rate limited ({status})", "rate_limited"
    if status == 529:
        return True, f"overloaded ({status})", "overloaded"
    if status >= 500 or status in (408, 409):  # 408 timeout, 409 conflict: the official SDKs retry both
        return True, f"server error ({status})", "server_error"
    return False, f"HTTP {status}", "rejected"


def _retry_after(headers: httpx2.Headers) -> float | None:
    """The wait a provider asks for: `retry-after-ms` (OpenAI), else `Retry-After` in seconds or as an HTTP date."""
    seconds: float | None = None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            seconds = float(milliseconds) / 1000
        except ValueError:
            seconds = None
    text = headers.get("retry-after")
    if seconds is None and text:
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _error_detail(body: bytes) -> str | None:
    """The provider's own message in an error body: `error.message` (both APIs), `message`, `detail`, or plain text."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        # Plain text is a message; an HTML error page is noise.
        return None if text.startswith("<") else _truncate(text)
    message: object = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if not message:
            message = data.get("message") or data.get("detail")
    if isinstance(message, str) and message.strip():
        return _truncate(message.strip())
    return _truncate(text)


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "…"


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _connect_reason(exc: Exception) -> str:
    """The system's words for why connecting failed ("Connection refused"), from under httpx2's and trio's wrappers."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        if isinstance(cause, BaseExceptionGroup):
            # trio tried each address and says only that all failed; the attempts say why.
            reasons = dict.fromkeys(e.strerror for e in cause.exceptions if isinstance(e, OSError) and e.strerror)
            if reasons:
                return "; ".join(reasons)
        cause = cause.__cause__ or cause.__context__
    return _describe(exc)


def _scrubbed(error: ProviderError, secrets: dict[str, str]) -> ProviderError:
    # Providers echo keys back ("Incorrect API key provided: ..."), and so can a
    # transport error about a header: no message leaves here with a secret in
    # it (`ProviderConfig.secrets`), and every error of a request leaves here.
    message, reason = redact(error.message, secrets), redact(error.reason, secrets)
    if message == error.message and reason == error.reason:
        return error
    scrubbed = error._replace(message, retryable=error.retryable)
    scrubbed.reason = reason
    return scrubbed


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows the answer ([DONE], the end of the body) for a moment, so the connection can be reused."""
    with trio.move_on_after(_DRAIN_AFTER_FINISH):
        try:
            async for _ in chunks:
                pass
        except httpx2.RequestError:
            pass  # the answer is complete; how the body after it ends does not matter
