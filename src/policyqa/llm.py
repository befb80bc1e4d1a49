"""Talking to an OpenAI-compatible chat-completions server (Ollama, llama.cpp, vLLM, LM
Studio, hosted APIs).

Owns: the HTTP exchange only -- streamed chat completions read as server-sent events, the
/models probe -- and turning every way it can fail (refused, timed out, 401, a model the
server does not have, an empty, malformed or cut-off reply) into one LLMError whose
message is one line for the user. A thin httpx client: the openai package would cost
half a second of import on every written answer.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from .config import LLMError, LLMSettings
from .render import safe

CONNECT_TIMEOUT_S = 5.0
ERROR_BODY_CHARS = 200


def _one_line(text: str, limit: int = ERROR_BODY_CHARS) -> str:
    """Server text for an error message: one line, bounded, control characters visible
    (the message reaches the terminal, and the server is not trusted)."""
    flat = safe(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _server_message(response: httpx.Response) -> str:
    """The error text a server sent, from OpenAI's {"error": {"message"}} or as is."""
    try:
        body = response.read().decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return _one_line(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return _one_line(str(error.get("message") or ""))
    if isinstance(error, str):
        return _one_line(error)
    return _one_line(body)


class Client:
    """One model server; `stream` yields the reply's text as it arrives."""

    def __init__(self, settings: LLMSettings):
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = httpx.Client(
            base_url=settings.url, headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.timeout_s)),
        )
        self.model = settings.model

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _failure(self, exc: httpx.HTTPError) -> LLMError:
        where = self.settings.url
        if isinstance(exc, httpx.TimeoutException):
            return LLMError(f"the model server at {where} did not answer within {self.settings.timeout_s:g} s")
        if isinstance(exc, httpx.ConnectError):
            return LLMError(f"cannot reach the model server at {where} ({_one_line(str(exc)) or 'connection refused'})")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return LLMError(f"the model server at {where} closed the connection mid-answer (the stream was cut off)")
        return LLMError(f"the model server at {where} failed: {type(exc).__name__}: {_one_line(str(exc))}")

    def _refusal(self, response: httpx.Response) -> LLMError:
        status, message = response.status_code, _server_message(response)
        if status in (401, 403):
            return LLMError(f"the model server refused the request (HTTP {status}: check the API key): {message}")
        if status == 404 or (status == 400 and "model" in message.lower()):
            return LLMError(f"the model server has no model {self.model!r} (HTTP {status}){self._known_models()}")
        return LLMError(f"the model server answered HTTP {status}: {message}")

    def _known_models(self) -> str:
        try:
            names = self.models()
        except LLMError:
            return ""
        return f"; it has: {', '.join(names[:10])}" if names else ""

    def models(self) -> list[str]:
        """The model ids the server lists (GET /models)."""
        try:
            response = self._http.get("/models")
        except httpx.HTTPError as exc:
            raise self._failure(exc) from None
        if response.status_code != 200:
            raise self._refusal(response)
        try:
            data = response.json()["data"]
            return [str(m["id"]) for m in data]
        except (ValueError, KeyError, TypeError):
            raise LLMError(f"the model server at {self.settings.url} sent a malformed model list") from None

    def resolve_model(self) -> str:
        """The configured model, else the first one the server lists."""
        if not self.model:
            names = self.models()
            if not names:
                raise LLMError(f"the model server at {self.settings.url} lists no models; name one with --llm-model")
            self.model = names[0]
        return self.model

    def stream(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.1) -> Iterator[str]:
        """The reply's text, piece by piece as the server sends it. Raises LLMError when
        the stream fails, is malformed, ends before the server said it is done, or holds
        no text at all."""
        body = {"model": self.resolve_model(), "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "stream": True}
        got_text = False
        try:
            with self._http.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise self._refusal(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue  # SSE comments, event names, keep-alives
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    text, finished = self._delta(payload)
                    if text:
                        got_text = True
                        yield text
                    if finished:
                        break
                else:
                    raise LLMError(f"the model server at {self.settings.url} stopped mid-answer "
                                   "(the stream was cut off)")
        except httpx.HTTPError as exc:
            raise self._failure(exc) from None
        if not got_text:
            raise LLMError(f"the model server at {self.settings.url} sent an empty reply")

    def _delta(self, payload: str) -> tuple[str, bool]:
        """(text, finished) of one streamed event."""
        try:
            event = json.loads(payload)
        except ValueError:
            raise LLMError(f"the model server sent a malformed reply: {_one_line(payload, 80)}") from None
        if not isinstance(event, dict):
            raise LLMError(f"the model server sent a malformed reply: {_one_line(payload, 80)}")
        if "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise LLMError(f"the model server failed mid-answer: {_one_line(str(message))}")
        try:
            choice = event["choices"][0] if event.get("choices") else {}
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
        except (TypeError, AttributeError, IndexError):
            raise LLMError(f"the model server sent a malformed reply: {_one_line(payload, 80)}") from None
        if not isinstance(text, str):
            raise LLMError(f"the model server sent a malformed reply: {_one_line(payload, 80)}")
        return text, bool(choice.get("finish_reason"))
