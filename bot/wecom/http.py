"""The HTTP transport of WeCom calls: urllib3's connection pool directly, shaped like the requests.Session that
wechatpy calls (requests costs about 0.7 ms more CPU per call); its errors are requests' own, so callers and
wechatpy handle them as before."""

from __future__ import annotations

import json as jsonlib
from typing import Any
from urllib.parse import urlencode

import requests
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

POOL_SIZE = 32  # connections kept per host: a worker's threads and the scheduler's share one pool


class Response:
    """The part of requests.Response that wechatpy and bot/wecom/client.py read."""

    def __init__(self, status: int, content: bytes, headers: Any, url: str) -> None:
        self.status_code = status
        self.content = content
        self.headers = headers
        self.url = url
        self.request = None
        self.encoding = "utf-8"

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, "replace")

    def json(self) -> Any:
        """The body as JSON; not JSON (a proxy's error page): requests.JSONDecodeError, a RequestException."""
        try:
            return jsonlib.loads(self.content.decode("utf-8", "ignore"), strict=False)
        except jsonlib.JSONDecodeError as exc:
            raise requests.JSONDecodeError(exc.msg, exc.doc, exc.pos) from None

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"HTTP {self.status_code}", response=self)  # type: ignore[arg-type]


class Session:
    """request / get / post over one urllib3 pool; no retries here (bot/wecom/client.py decides)."""

    def __init__(self, pool_size: int = POOL_SIZE) -> None:
        self._pool = urllib3.PoolManager(maxsize=pool_size, retries=False)

    def request(self, method: str, url: str, params: dict[str, Any] | None = None, data: Any = None,
                json: Any = None, timeout: float | None = None, headers: dict[str, str] | None = None) -> Response:
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        body = data
        headers = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json, ensure_ascii=False).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        try:
            res = self._pool.request(method.upper(), url, body=body, headers=headers or None, preload_content=False,
                                     timeout=urllib3.Timeout(total=timeout) if timeout else None, retries=False)
        except NewConnectionError as exc:
            raise requests.ConnectionError(str(exc)) from None
        except ConnectTimeoutError as exc:
            raise requests.ConnectTimeout(str(exc)) from None
        except ReadTimeoutError as exc:
            raise requests.ReadTimeout(str(exc)) from None
        except urllib3.exceptions.HTTPError as exc:  # reset or closed before an answer began, as requests says
            raise requests.ConnectionError(f"{exc.__class__.__name__}: {exc}") from None
        try:
            content = res.read()
        except ReadTimeoutError as exc:
            raise requests.ReadTimeout(str(exc)) from None
        except urllib3.exceptions.HTTPError as exc:  # the answer broke off: the request was sent and may be done
            raise requests.exceptions.ChunkedEncodingError(f"{exc.__class__.__name__}: {exc}") from None
        finally:
            res.release_conn()
        return Response(res.status, content, res.headers, url)

    def get(self, url: str, **kwargs: Any) -> Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Response:
        return self.request("POST", url, **kwargs)
