"""`IpfsStore`: the `Store` interface over an IPFS node's RPC API (js-ipfs or Kubo).

Built on `ipfshttpclient` 0.7.0. Its `connect()` refuses daemons newer than 0.8 (js-ipfs says
0.18, Kubo 0.2x), so the `Client` is constructed directly, which skips that check; the methods
used here (add_bytes, cat, pin.add, pin.ls, block.stat, version) work against js-ipfs 0.66 and
Kubo. The library triggers a urllib3 FutureWarning on every request; it is silenced around our
calls only.

Behaviour:

- Transient failures (connection refused while the daemon starts, HTTP 5xx that are not one of
  the node's definite answers) are retried with exponential backoff: `retries` more attempts,
  sleeping `backoff`, 2x`backoff`, ... (each sleep capped at `max_backoff`). If the node still
  does not answer: StorageUnavailable ("IPFS node at ... does not answer: start it with
  `market stack up`").
- Every wait is bounded. A node asked for a block it lacks waits for the network until told
  otherwise, so:
  `cat` sends no headers until it has the first block: if nothing arrives within
  `find_timeout` seconds the request is dropped (the node aborts it on disconnect) and
  ContentNotFound is raised; the whole transfer is bounded by `timeout` on the node. A transfer
  that starts and then stalls for `find_timeout` is retried once, patiently (root block
  checked first, then `timeout` for the whole transfer).
  `pin` and `has` ask for the root block with a node-side timeout of `find_timeout`: no answer
  means ContentNotFound (`has` returns False).
- A malformed CID is refused before any request (InvalidCid).
- Every object added is pinned (`pin=true` on add; `pin()` pins explicitly).
- `cat(max_bytes=n)` asks the node for at most n+1 bytes, so memory stays bounded, and raises
  ContentTooLarge if there were more than n.
- `cat` returns what the node sent; only `fetch_verified` (sha256 against the chain's digest)
  says the bytes are the right ones.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_exc
import requests

from market.errors import (
    ConfigError,
    ContentNotFound,
    ContentTooLarge,
    StorageError,
    StorageTimeout,
    StorageUnavailable,
)
from market.storage._address import ApiAddress, parse_api_address, require_loopback
from market.storage.base import Store, parse_cid

__all__ = ["DEFAULT_API", "IpfsStore"]

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001/http"

T = TypeVar("T")

# Answers of the node that retrying will not change (js-ipfs reports all of them as HTTP 500).
_DEFINITE = (
    "timed out",
    "not pinned",
    "is a directory",
    "not a file",
    "invalid",
    "not found",
    "no link named",
    "could not resolve",
    "unexpected end",
    "unknown codec",
)


# ipfshttpclient makes urllib3 emit a FutureWarning on every request. The filter is installed once,
# process-wide and narrowly: `warnings.catch_warnings` per call is not thread-safe and let warnings
# through from parallel fetches.
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*'strict' parameter")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"ipfshttpclient")


class _NodeAnswer(Exception):
    """A definite error answer from the node (not retried); callers map it."""

    def __init__(self, message: str, status: int | None):
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def timed_out(self) -> bool:
        return "timed out" in self.message.lower()


class _NoResponse(Exception):
    """No response (headers) within the client's read timeout."""


class _TransferBroken(Exception):
    """The response started, then stalled or broke off."""


class IpfsStore(Store):
    """A `Store` backed by the IPFS node whose RPC API listens at `api`.

    `api` is a multiaddr (`/ip4/127.0.0.1/tcp/5001/http`) or URL (`http://127.0.0.1:5001`);
    a non-loopback address is refused with ConfigError unless `allow_remote=True`.
    `timeout` bounds one transfer (seconds), `find_timeout` how long to wait for a CID the node
    does not hold, `retries`/`backoff`/`max_backoff` the retry schedule for transient errors.
    """

    def __init__(
        self,
        api: str = DEFAULT_API,
        *,
        timeout: float = 60.0,
        find_timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_backoff: float = 2.0,
        allow_remote: bool = False,
        chunk_size: int = 1 << 20,
    ):
        if timeout <= 0 or find_timeout <= 0 or retries < 0 or backoff < 0:
            raise ConfigError(
                "IpfsStore needs timeout > 0, find_timeout > 0, retries >= 0 and backoff >= 0"
            )
        self.address: ApiAddress = parse_api_address(api)
        require_loopback(self.address, allow_remote)
        self.timeout = float(timeout)
        self.find_timeout = float(find_timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        try:
            self._client = ipfshttpclient.Client(
                self.address.multiaddr,
                timeout=self._http_timeout(self.timeout),
                session=True,
                chunk_size=chunk_size,
            )
        except ipfs_exc.AddressError as exc:
            raise ConfigError(f"{api!r} is not a usable RPC API address: {exc}") from None

    def __repr__(self) -> str:
        return f"IpfsStore({self.address.multiaddr!r})"

    @property
    def api_url(self) -> str:
        return self.address.url

    # -- Store -----------------------------------------------------------------------------

    def add(self, data: bytes) -> str:
        payload = bytes(data)
        what = f"add ({len(payload)} bytes)"
        try:
            answer = self._call(
                what,
                lambda: self._client.add_bytes(
                    payload, opts={"pin": "true"}, timeout=self._http_timeout(self.timeout)
                ),
            )
        except (_NodeAnswer, _NoResponse, _TransferBroken) as exc:
            raise self._failed(what, exc) from None
        cid = answer if isinstance(answer, str) else str(answer)
        try:
            parse_cid(cid)
        except StorageError:
            raise StorageError(
                f"IPFS node at {self.api_url} answered add with {cid[:80]!r}, not a CID: "
                "check that the address is an IPFS RPC API"
            ) from None
        return cid

    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
        parse_cid(cid)
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        limit = self.timeout if timeout is None else float(timeout)
        wait = min(self.find_timeout, limit)
        opts: dict[str, Any] = {"timeout": _duration(limit)}
        if max_bytes is not None:
            opts["length"] = max_bytes + 1
        what = f"cat {cid}"
        try:
            # Optimistic: one request; the node sends nothing until it has the first block.
            data = self._call(
                what,
                lambda: self._client.cat(cid, opts=opts, timeout=(min(10.0, wait + 5), wait)),
            )
        except _NoResponse:
            raise self._not_found(cid, wait) from None
        except _TransferBroken:
            # Started, then stalled for `wait`: check the root, then allow the whole `limit`.
            self._require_block(cid, wait)
            try:
                data = self._call(
                    what,
                    lambda: self._client.cat(cid, opts=opts, timeout=self._http_timeout(limit)),
                )
            except (_NodeAnswer, _NoResponse, _TransferBroken) as exc:
                raise self._failed(what, exc, limit) from None
        except _NodeAnswer as exc:
            raise self._failed(what, exc, limit) from None
        data = bytes(data)
        if max_bytes is not None and len(data) > max_bytes:
            raise ContentTooLarge(
                f"{cid} holds more than the {max_bytes} bytes allowed: "
                "raise max_bytes or reject the content"
            )
        return data

    def pin(self, cid: str) -> None:
        parse_cid(cid)
        self._require_block(cid, self.find_timeout)
        what = f"pin {cid}"
        try:
            self._call(
                what,
                lambda: self._client.pin.add(
                    cid,
                    opts={"timeout": _duration(self.timeout)},
                    timeout=self._http_timeout(self.timeout),
                ),
            )
        except _NodeAnswer as exc:
            if exc.timed_out:
                raise ContentNotFound(
                    f"IPFS node at {self.api_url} could not fetch all of {cid} to pin it within "
                    f"{self.timeout:g}s: make sure a provider holding it is reachable"
                ) from None
            raise self._failed(what, exc) from None
        except (_NoResponse, _TransferBroken) as exc:
            raise self._failed(what, exc, self.timeout) from None

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        """Whether the node holds `cid`: pinned (fast path), or its root block answers in time.

        A block the node lacks costs the whole `timeout` (default `find_timeout`): the node
        waits for providers until then.
        """
        if self.is_pinned(cid):
            return True
        wait = self.find_timeout if timeout is None else float(timeout)
        try:
            self._block_stat(cid, wait)
            return True
        except _NodeAnswer as exc:
            if exc.timed_out:
                return False
            raise self._failed(f"block stat {cid}", exc) from None
        except (_NoResponse, _TransferBroken) as exc:
            raise self._failed(f"block stat {cid}", exc, wait) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()

    # -- extras -----------------------------------------------------------------------------

    def is_pinned(self, cid: str) -> bool:
        """Whether `cid` is pinned on the node (directly, recursively or indirectly)."""
        parse_cid(cid)
        what = f"pin ls {cid}"
        try:
            self._call(what, lambda: self._client.pin.ls(cid, type="all", timeout=(10, 30)))
            return True
        except _NodeAnswer as exc:
            if "not pinned" in exc.message.lower():
                return False
            raise self._failed(what, exc) from None
        except (_NoResponse, _TransferBroken) as exc:
            raise self._failed(what, exc, 30) from None

    def version(self) -> str:
        """The daemon's version string (e.g. `0.18.1` for js-ipfs 0.66)."""
        try:
            answer = self._call("version", lambda: self._client.version(timeout=(10, 10)))
        except (_NodeAnswer, _NoResponse, _TransferBroken) as exc:
            raise self._failed("version", exc, 10) from None
        return str(answer["Version"])

    # -- internals ---------------------------------------------------------------------------

    def _http_timeout(self, seconds: float) -> tuple[float, float]:
        # (connect, read): the node enforces `seconds` itself; the client waits a little longer.
        return (min(10.0, seconds + 5.0), seconds + min(5.0, max(1.0, seconds)))

    def _block_stat(self, cid: str, wait: float) -> Any:
        return self._call(
            f"block stat {cid}",
            lambda: self._client.block.stat(
                cid, opts={"timeout": _duration(wait)}, timeout=self._http_timeout(wait)
            ),
        )

    def _require_block(self, cid: str, wait: float) -> None:
        try:
            self._block_stat(cid, wait)
        except _NodeAnswer as exc:
            if exc.timed_out:
                raise self._not_found(cid, wait) from None
            raise self._failed(f"block stat {cid}", exc) from None
        except (_NoResponse, _TransferBroken) as exc:
            raise self._failed(f"block stat {cid}", exc, wait) from None

    def _not_found(self, cid: str, wait: float) -> ContentNotFound:
        return ContentNotFound(
            f"IPFS node at {self.api_url} found no provider for {cid} within {wait:g}s: "
            "check the CID, or connect a node that holds it"
        )

    def _failed(self, what: str, exc: Exception, seconds: float | None = None) -> StorageError:
        """A StorageError for a definite, unrecoverable failure of `what`."""
        if isinstance(exc, _NodeAnswer):
            if exc.timed_out and seconds is not None:
                return StorageTimeout(
                    f"IPFS node at {self.api_url} did not finish {what} within {seconds:g}s: "
                    "raise the timeout or check the node's log"
                )
            return StorageError(f"IPFS node at {self.api_url} refused {what}: {exc.message}")
        if isinstance(exc, _NoResponse):
            return StorageTimeout(
                f"IPFS node at {self.api_url} did not answer {what} in time: "
                "check that the node is healthy (its log) or raise the timeout"
            )
        return StorageError(
            f"the transfer for {what} from {self.api_url} broke off ({exc}): "
            "check the node's log and try again"
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one RPC call, retrying transient failures.

        Raises _NodeAnswer (a definite error answer), _NoResponse (read timeout before any
        response), _TransferBroken (the body stalled or broke off), StorageUnavailable (nobody
        listens, after retries) or StorageError.
        """
        attempts = self.retries + 1
        last: str = ""
        refused = False
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            try:
                return fn()
            except ipfs_exc.ConnectionError as exc:
                refused, last = True, _one_line(exc)
            except ipfs_exc.TimeoutError as exc:
                if isinstance(getattr(exc, "original", None), requests.exceptions.ConnectTimeout):
                    refused, last = True, _one_line(exc)
                    continue
                raise _NoResponse(_one_line(exc)) from None
            except ipfs_exc.ErrorResponse as exc:  # the node answered with an error message
                status = _status_of(exc)
                message = _one_line(exc)
                if status is None or status < 500 or _is_definite(message):
                    raise _NodeAnswer(message, status) from None
                refused, last = False, f"HTTP {status}: {message}"
            except ipfs_exc.StatusError as exc:  # an HTTP error without an IPFS error body
                status = _status_of(exc)
                if status is not None and status >= 500:
                    refused, last = False, f"HTTP {status}"
                    continue
                raise StorageError(
                    f"{self.api_url} answered {what} with HTTP {status}: "
                    "check that the address is an IPFS RPC API"
                ) from None
            except ipfs_exc.ProtocolError as exc:
                raise StorageError(
                    f"{self.api_url} did not answer {what} like an IPFS RPC API "
                    f"({_one_line(exc)}): check the address"
                ) from None
            except ipfs_exc.Error as exc:
                raise StorageError(f"IPFS RPC call {what} failed: {_one_line(exc)}") from None
            except requests.exceptions.RequestException as exc:  # raised while reading the body
                raise _TransferBroken(_one_line(exc)) from None
        if refused:
            raise StorageUnavailable(
                f"IPFS node at {self.api_url} does not answer: start it with `market stack up`"
            )
        raise StorageTimeout(
            f"IPFS node at {self.api_url} kept failing {what} after {attempts} attempts "
            f"({last}): check the node's log"
        )


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _status_of(exc: ipfs_exc.Error) -> int | None:
    response = getattr(getattr(exc, "original", None), "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_definite(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _DEFINITE)


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]
