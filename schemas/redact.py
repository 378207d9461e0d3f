"""Keep secrets in URLs out of everything speechmill writes, and text safe to encode.

Sources are often private feeds or signed links: ``https://user:pass@host/…``,
``…?token=…``, S3/GCS presigned parameters. The URL itself is needed to download, but the
manifest, the sources and rejected tables, log lines and every sample's ``.json`` (which end up in
published datasets) get the redacted form: credentials and secret-looking query values become
``REDACTED``. A source's id comes from the whole URL through a keyed hash (``schemas.keys``), so
two links that differ only in a token stay two sources and the id gives the token away to no one.

``clean_text`` replaces lone surrogates (which a page's ``<title>`` or a JSONL line can carry and
which UTF-8 cannot encode) and control characters, so one odd title cannot crash a run at the end.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "REDACTED"
_SECRET_PARAM = re.compile(
    r"(token|secret|passw|pwd|pass$|sig$|signature|credential|auth|apikey|api_key|api-key|access_key|"
    r"accesskey|^key$|_key$|-key$|session|jwt|hmac|^code$|^x-amz-|^x-goog-)", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'"<>)\]]+""")
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def is_secret_param(name: str) -> bool:
    return bool(_SECRET_PARAM.search(name))


def redact_url(url: str) -> str:
    """``url`` with user info and secret-looking query values replaced by ``REDACTED``."""
    if not isinstance(url, str) or "://" not in url:
        return url
    if "@" not in url and "?" not in url and "#" not in url:
        return url  # nothing that could hold a secret
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_param(k) for k, _ in pairs):
            query = urlencode([(k, MASK if is_secret_param(k) else v) for k, v in pairs], safe="/:")
    fragment = parts.fragment
    if fragment and "=" in fragment:
        pairs = parse_qsl(fragment, keep_blank_values=True)
        if any(is_secret_param(k) for k, _ in pairs):
            fragment = urlencode([(k, MASK if is_secret_param(k) else v) for k, v in pairs], safe="/:")
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """Free text (an error message) with every URL in it redacted."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def clean_text(value):
    """A string safe to write as UTF-8: lone surrogates → U+FFFD, control characters dropped."""
    if not isinstance(value, str):
        return value
    if _SURROGATES.search(value):
        value = _SURROGATES.sub("\ufffd", value)
    if _CONTROL.search(value):
        value = _CONTROL.sub("", value)
    return value


def safe(value):
    """``clean_text`` and ``redact_text`` together: for anything written out."""
    return redact_text(clean_text(value))
