"""The user's settings: which model server, if any, writes answers.

Owns: reading the language-model settings from command-line options, the environment
(POLICYQA_LLM_URL, POLICYQA_LLM_MODEL, POLICYQA_LLM_API_KEY, POLICYQA_LLM_TIMEOUT,
POLICYQA_LLM_MAX_TOKENS) and a
small TOML file in the user's config directory, in that order of precedence. Nothing
here talks to a server (llm.py does): with no URL configured the caller never imports
the client.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, UserError

ENV = {"url": "POLICYQA_LLM_URL", "model": "POLICYQA_LLM_MODEL", "api_key": "POLICYQA_LLM_API_KEY",
       "timeout": "POLICYQA_LLM_TIMEOUT", "max_tokens": "POLICYQA_LLM_MAX_TOKENS"}
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_TOKENS = 400
EXAMPLE = """\
# policyqa settings. Written answers need an OpenAI-compatible chat-completions server:
[llm]
url = "http://localhost:11434/v1"   # Ollama; llama.cpp's server: http://127.0.0.1:8080/v1
model = "qwen2.5:7b-instruct"       # omit to use the first model the server lists
# api_key = "..."                   # hosted APIs; sent as a Bearer token
# timeout = 60                      # seconds to wait for the server to answer
# max_tokens = 400                  # the longest written answer, in tokens
"""


class ConfigError(InputError):
    """A settings file or value that cannot be used; the message is shown to the user."""


class LLMError(UserError):
    """The model server could not give an answer; the message says why in one line.
    Defined here, beside the settings, so that the CLI can name it without importing
    the HTTP client."""


@dataclass(frozen=True)
class LLMSettings:
    url: str
    model: str | None  # None: the first model the server lists
    api_key: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_tokens: int = DEFAULT_MAX_TOKENS
    required: bool = False  # a failure of the server is an error (exit 1), not a note


def config_path() -> Path:
    """$POLICYQA_CONFIG, else config.toml in the user's config directory."""
    from platformdirs import user_config_dir

    return Path(os.environ.get("POLICYQA_CONFIG") or Path(user_config_dir("policyqa")) / "config.toml")


def read_file(path: Path | None = None) -> dict[str, object]:
    """The [llm] table of the settings file ({} when there is no file)."""
    path = path or config_path()
    if not path.exists():
        return {}
    import tomllib  # only when there is a file: the one-shot path imports nothing it does not use

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from None
    table = data.get("llm", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [llm] must be a table")
    unknown = set(table) - set(ENV)
    if unknown:
        raise ConfigError(f"{path}: unknown [llm] setting(s) {', '.join(sorted(unknown))} (known: {', '.join(ENV)})")
    return table


def sources(url: str | None = None, model: str | None = None) -> dict[str, tuple[object, str]]:
    """Each setting's value and where it came from ("option", the variable, or the file)."""
    given = {"url": url, "model": model}
    table = read_file()
    out: dict[str, tuple[object, str]] = {}
    for key, var in ENV.items():
        if given.get(key):
            out[key] = (given[key], "option")
        elif os.environ.get(var):
            out[key] = (os.environ[var], var)
        elif table.get(key) not in (None, ""):
            out[key] = (table[key], str(config_path()))
    return out


def llm_settings(url: str | None = None, model: str | None = None, required: bool = False) -> LLMSettings | None:
    """The model server to write answers with, or None when none is configured."""
    found = sources(url, model)
    if "url" not in found:
        if required:
            raise ConfigError("--llm-required, but no model server is configured (--llm URL or POLICYQA_LLM_URL)")
        return None
    value, origin = found["url"]
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(f"the model server URL must start with http:// or https:// (from {origin}): {value!r}")
    model_name = found.get("model", (None, ""))[0]
    key = found.get("api_key", (None, ""))[0]
    return LLMSettings(url=value.rstrip("/"), model=str(model_name) if model_name else None,
                       api_key=str(key) if key else None,
                       timeout_s=_positive(found, "timeout", DEFAULT_TIMEOUT_S, float),
                       max_tokens=int(_positive(found, "max_tokens", DEFAULT_MAX_TOKENS, int)), required=required)


def _positive(found: dict[str, tuple[object, str]], key: str, default: float, kind: type) -> float:
    value, origin = found.get(key, (default, ""))
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        whole = "whole " if kind is int else ""
        raise ConfigError(f"{key} must be a positive {whole}number (from {origin}): {value!r}")
    return number
