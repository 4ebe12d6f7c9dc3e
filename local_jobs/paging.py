"""Paging of the control plane's List operations: ``maxResults`` and ``nextToken`` as AWS has them.

A token is the offset of the next item, the listing it belongs to (operation and filters) and
an HMAC of both under a key of this service process: a token that was never issued, or that
was issued for another listing, is an ``InvalidRequestException``. Tokens do not outlive the
service process (a restart makes them invalid), and an item added or removed between two
pages shifts the offsets (AWS gives no guarantee here either).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import List, Mapping, Optional, Sequence, Tuple, TypeVar

from local_jobs.model import InvalidRequestError

T = TypeVar("T")
MAX_RESULTS = 250  # botocore LaserMaxResults and RegistryMaxResults: 1-250


class Pager:
    """Cuts listings into pages and checks the tokens it issued."""

    def __init__(self, secret: Optional[bytes] = None) -> None:
        self._secret = secret or os.urandom(32)

    def page(
        self,
        items: Sequence[T],
        query: Mapping[str, str],
        operation: str,
        maximum: int = MAX_RESULTS,
    ) -> Tuple[List[T], Optional[str]]:
        """The page ``query`` asks for and the token of the next one (None on the last page).

        Without ``maxResults`` every item from the token on is returned. Raises
        InvalidRequestError for a ``maxResults`` out of 1..maximum or a token not issued for
        this listing.
        """
        size = self._size(query, maximum)
        listing = self._listing(operation, query)
        start = 0
        token = query.get("nextToken")
        if token is not None:
            start = self._offset(token, listing)
        end = len(items) if size is None else start + size
        following = self._token(end, listing) if end < len(items) else None
        return list(items[start:end]), following

    @staticmethod
    def _size(query: Mapping[str, str], maximum: int) -> Optional[int]:
        text = query.get("maxResults")
        if text is None:
            return None
        try:
            size = int(text)
        except ValueError:
            raise InvalidRequestError(f"maxResults must be an integer, got {text!r}") from None
        if not 1 <= size <= maximum:
            raise InvalidRequestError(f"maxResults must be 1 to {maximum}, got {size}")
        return size

    @staticmethod
    def _listing(operation: str, query: Mapping[str, str]) -> str:
        filters = sorted((k, v) for k, v in query.items() if k not in ("nextToken", "maxResults"))
        return operation + "?" + "&".join(f"{k}={v}" for k, v in filters)

    def _mac(self, offset: int, listing: str) -> str:
        digest = hmac.new(self._secret, f"{offset}|{listing}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def _token(self, offset: int, listing: str) -> str:
        raw = f"{offset}.{self._mac(offset, listing)}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _offset(self, token: str, listing: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            offset_text, mac = raw.split(".", 1)
            offset = int(offset_text)
        except (ValueError, UnicodeDecodeError):
            offset, mac = -1, ""
        if offset < 0 or not hmac.compare_digest(mac, self._mac(offset, listing)):
            raise InvalidRequestError(
                f"nextToken {token[:80]!r} was not issued for this listing (tokens are valid "
                f"for the same operation and filters, until the service restarts)"
            )
        return offset
