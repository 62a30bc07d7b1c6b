"""Secret redaction: every secret the harness reads is registered here, and log records, run metadata
and error messages go through ``redact`` (registered values and anything shaped like a credential
become ``***``). Process-wide: one registry for every target and caller.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

from .protocol.endpoint import is_secret_param

MIN_SECRET_LEN = 6  # shorter values would mangle ordinary text and are not real keys/tokens
MAX_SECRETS = 256  # oldest dropped first; stale tokens are still caught by the Bearer/JWT patterns
MASK = "***"

_KV = re.compile(r"""(?i)(["']?\b(?:api[-_]?key|ocp-apim-subscription-key|x-api-key|agent[-_]access[-_]token|"""
                 r"""access[-_]token|refresh[-_]token|client[-_]secret|password|token|sig)["']?\s*[:=]\s*["']?)"""
                 r"""(?!\*\*\*)[^\s"'&,;}\]]+""")
_AUTH = re.compile(r"""(?i)(["']?\bauthorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic)(?:\s+|%20|\+))?)"""
                   r"""(?!\*\*\*)[^\s"'&,;}\]]+""")
_BEARER = re.compile(r"(?i)\b(bearer(?:\s+|%20|\+))(?!\*\*\*)[A-Za-z0-9\-._~+/=%]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_QUERY = re.compile(r"([?&])([^=&\s#]+)=([^&\s#\"']*)")
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)", re.I)


class Redactor:
    """Replaces registered secret values and anything shaped like a credential with ``***``."""

    def __init__(self) -> None:
        self._secrets: dict[str, None] = {}  # insertion-ordered set
        self._lock = threading.Lock()  # held only for set/regex updates, never across I/O
        self._regex: re.Pattern[str] | None = None

    def register(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_LEN or value in self._secrets:
            return
        with self._lock:
            self._secrets.update(dict.fromkeys((value, quote_plus(value), quote(value, safe=""))))
            while len(self._secrets) > MAX_SECRETS:
                del self._secrets[next(iter(self._secrets))]
            ordered = sorted(self._secrets, key=len, reverse=True)  # longest first: no partial leftovers
            self._regex = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: Any) -> str:
        text = text if isinstance(text, str) else str(text)
        regex = self._regex
        if regex is not None:
            text = regex.sub(MASK, text)
        text = _AUTH.sub(lambda m: m.group(1) + MASK, text)
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
        text = _KV.sub(lambda m: m.group(1) + MASK, text)
        text = _JWT.sub(MASK, text)
        text = _USERINFO.sub(lambda m: m.group(1) + MASK + m.group(2), text)
        return _QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}"
                          if is_secret_param(unquote_plus(m.group(2))) and m.group(3) else m.group(0), text)


REDACTOR = Redactor()


def register_secret(value: str | None) -> None:
    REDACTOR.register(value)


def redact(text: Any) -> str:
    """``text`` with every registered secret and credential-shaped value masked."""
    return REDACTOR.redact("" if text is None else text)


def redact_exception(exc: BaseException) -> str:
    """``Type: message`` for an exception and its causes, safe to print or record."""
    parts, seen, cur = [], set(), exc
    while cur is not None and id(cur) not in seen and len(parts) < 4:
        seen.add(id(cur))
        parts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return redact(" <- ".join(parts))


class RedactingFilter(logging.Filter):
    """Redacts a record's message (with its args merged in), exception text and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_voiceload_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad format args: keep what we can
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._voiceload_redacted = True
        return True


_FILTER = RedactingFilter()
_FACTORY_INSTALLED = False


def install_log_redaction() -> None:
    """Redact every log record: a filter on the root logger and every existing handler, plus a
    record factory so records reaching handlers added later (Locust's, pytest's) are clean too."""
    global _FACTORY_INSTALLED
    root = logging.getLogger()
    targets: list[Any] = [root, *root.handlers]
    for lg in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(lg, logging.Logger):
            targets.extend(lg.handlers)
    for t in targets:
        if _FILTER not in t.filters:
            t.addFilter(_FILTER)
    if not _FACTORY_INSTALLED:
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _FACTORY_INSTALLED = True
