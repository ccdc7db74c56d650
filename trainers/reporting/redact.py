"""Keep secrets out of everything a run writes: JSON files, logs, the W&B config, error messages.

Two layers:
- by name: a dict key or a `name=value` / `name: value` pair whose name looks secret (`*token*`,
  `*secret*`, `*password*`, `*api_key*`, `*_key` (not a bare `key`), `*credential*`, `*auth*`) gets its value replaced;
- by value: the values of secret-named environment variables (`WANDB_API_KEY`, `HF_TOKEN`, ...) and of
  secret-named overrides are remembered and replaced wherever they occur, whatever surrounds them
  (a repr, a path, a log line).

`write_json` (trainers/reporting/summary.py) redacts every JSON file the run writes; `install` redacts
every log record; `launch.py` redacts its one-paragraph error message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***REDACTED***"
_MIN_SECRET_LEN = 6  # shorter values ("1", "true") would redact innocent text

_SECRET_WORDS = (
    r"token|secret|passw(?:or)?d|passwd|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth"
)
_SECRET_NAME = re.compile(rf"(?i)({_SECRET_WORDS}|[_.-]key$)")
_NOT_SECRET = re.compile(
    r"(?i)(metric_key|_ids?|_length|_size|_count|_len|tokenizer\w*|_tokens|tokens_per_second|author\w*)$"
)
# name=value or name: value inside free text (overrides, reprs, log lines)
_PAIR = re.compile(r"(?P<name>\b[\w.-]+)(?P<sep>\s*[=:]\s*)(?P<q>['\"]?)(?P<value>[^\s'\",)}\]]+)")

_known_values: set[str] = set()


def is_secret_name(name: str) -> bool:
    name = str(name)
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET.search(name)


def remember(value: str | None) -> None:
    """Redact `value` wherever it appears from now on."""
    if value and len(value) >= _MIN_SECRET_LEN:
        _known_values.add(value)


def remember_environment(env: Mapping[str, str] | None = None) -> None:
    for name, value in (os.environ if env is None else env).items():
        if is_secret_name(name):
            remember(value)


def remember_overrides(overrides: Iterable[str]) -> int:
    """Remember the values of secret-named `key=value` overrides; returns how many there were."""
    found = 0
    for text in overrides:
        key, sep, value = str(text).partition("=")
        if sep and is_secret_name(key.strip().rsplit(".", 1)[-1]):
            remember(value.strip())
            found += 1
    return found


def has_secret_overrides(overrides: Iterable[str]) -> bool:
    return any(
        sep and is_secret_name(key.strip().rsplit(".", 1)[-1])
        for key, sep, _ in (str(t).partition("=") for t in overrides)
    )


def redact_text(text: str) -> str:
    for value in sorted(_known_values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)

    def pair(m: re.Match) -> str:
        if not is_secret_name(m.group("name")) or m.group("value") == REDACTED:
            return m.group(0)
        return f"{m.group('name')}{m.group('sep')}{m.group('q')}{REDACTED}"

    return _PAIR.sub(pair, text)


def redact(obj: Any) -> Any:
    """A copy of a JSON-like structure with secret-named keys and known secret values replaced."""
    if isinstance(obj, Mapping):
        return {
            k: (REDACTED if is_secret_name(str(k)) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


_factory_installed = False


def _install_record_factory() -> None:
    """Redact every log record at creation, whichever logger or handler (transformers' own included) emits it."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return record
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def install(overrides: Iterable[str] = ()) -> None:
    """Remember secrets from the environment and overrides; redact every log record from now on."""
    overrides = list(overrides)
    remember_environment()
    remember_overrides(overrides)
    if has_secret_overrides(overrides):
        os.environ.setdefault("WANDB_X_DISABLE_META", "true")  # W&B's metadata records the command line
    _install_record_factory()
