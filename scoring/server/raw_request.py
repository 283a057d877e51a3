"""The request object a ``@rawhttp`` scoring script gets: Flask's request API, without Flask.

Microsoft's server hands ``run(request)`` a Flask request. Scripts use a small part of it:
``get_data()``/``data`` (the body bytes, e.g. an image), ``headers``, ``method``, ``args``
(the query), ``form`` and ``files`` (form bodies), ``json``/``get_json()``. This class gives
those, built from what the ASGI app already read, so ``@rawhttp`` scripts run unchanged
with no Flask installed. Header names come title-cased (``Content-Type``), as Flask's do.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl


class MultiDict(dict[str, Any]):
    """``args``/``form``/``files``: ``d[key]`` and ``d.get(key)`` give the first value,
    ``d.getlist(key)`` all of them (werkzeug's ``MultiDict`` API)."""

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()) -> None:
        self._lists: dict[str, list[Any]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)
        super().__init__((k, v[0]) for k, v in self._lists.items())

    def getlist(self, key: str) -> list[Any]:
        return list(self._lists.get(key, []))


class Headers(dict[str, str]):
    """Request headers under Flask's title-cased names; lookups ignore case."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.title())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.title(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.title() if isinstance(key, str) else key)


def title_headers(raw: list[tuple[bytes, bytes]]) -> Headers:
    """ASGI header pairs as ``Headers`` (repeated names joined with ``,``, as WSGI does)."""
    out = Headers()
    for name, value in raw:
        key, text = name.decode("latin-1").title(), value.decode("latin-1")
        out[key] = f"{out[key]},{text}" if key in out else text
    return out


class FileStorage:
    """One uploaded file of a multipart form (werkzeug's ``FileStorage`` API, in memory)."""

    def __init__(self, name: str, filename: str, content_type: str, data: bytes) -> None:
        self.name, self.filename, self.content_type, self.data = name, filename, content_type, data

    @property
    def mimetype(self) -> str:
        return self.content_type.split(";", 1)[0].strip()

    def read(self) -> bytes:
        return self.data

    def save(self, dst: str) -> None:
        with open(dst, "wb") as f:
            f.write(self.data)


class AMLRequest:
    """The ``request`` a ``@rawhttp`` ``run(request)`` receives."""

    def __init__(
        self, method: str, path: str, query_string: bytes, headers: Headers, body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.data = body
        self.args = MultiDict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        self._form: tuple[MultiDict, MultiDict] | None = None

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query_string.decode('latin-1')}"

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def mimetype(self) -> str:
        return (self.content_type or "").split(";", 1)[0].strip().lower()

    @property
    def is_json(self) -> bool:
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    def get_data(
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> Any:
        return self.data.decode("utf-8", "replace") if as_text else self.data

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The body parsed as JSON; None when it is not JSON and ``silent`` (or not forced)."""
        if not (force or self.is_json):
            if silent:
                return None
            raise ValueError(f"Content-Type {self.content_type!r} is not application/json")
        try:
            return json.loads(self.data)
        except ValueError:
            if silent:
                return None
            raise

    @property
    def json(self) -> Any:
        return self.get_json()

    @property
    def form(self) -> MultiDict:
        return self._parse_form()[0]

    @property
    def files(self) -> MultiDict:
        return self._parse_form()[1]

    def _parse_form(self) -> tuple[MultiDict, MultiDict]:
        """URL-encoded or multipart form fields and files (parsed on first use)."""
        if self._form is None:
            fields: list[tuple[str, Any]] = []
            files: list[tuple[str, Any]] = []
            if self.mimetype == "application/x-www-form-urlencoded":
                fields = list(
                    parse_qsl(self.data.decode("utf-8", "replace"), keep_blank_values=True)
                )
            elif self.mimetype == "multipart/form-data":
                head = f"Content-Type: {self.content_type}\r\n\r\n".encode("latin-1")
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    head + self.data
                )
                for part in message.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    if not isinstance(name, str):
                        continue
                    decoded = part.get_payload(decode=True)
                    payload = decoded if isinstance(decoded, bytes) else b""
                    filename = part.get_filename()
                    if filename is None:
                        charset = part.get_content_charset() or "utf-8"
                        fields.append((name, payload.decode(charset, "replace")))
                    else:
                        ctype = part.get("content-type", "application/octet-stream")
                        files.append((name, FileStorage(name, filename, str(ctype), payload)))
            self._form = (MultiDict(fields), MultiDict(files))
        return self._form
