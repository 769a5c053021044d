"""A streaming response that streams under ASGI too.

Django serves a StreamingHttpResponse over a synchronous iterator under ASGI by reading the
whole iterator into a list first (with a warning), which defeats streaming: a large CSV export
would sit in memory and its first byte would wait for its last. This response pulls one chunk
at a time instead, each in the thread sync views and the database connection run in
(thread-sensitive sync_to_async), so a server-side cursor opened by the first chunk serves the
next ones. Under WSGI (and Django's test client) it is a plain StreamingHttpResponse.
"""

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

_DONE = object()


class SyncStreamingResponse(StreamingHttpResponse):
    def __init__(self, chunks: Iterator[bytes], *args, **kwargs) -> None:
        self._chunks = iter(chunks)
        super().__init__(self._chunks, *args, **kwargs)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        next_chunk = sync_to_async(next, thread_sensitive=True)
        try:
            while (chunk := await next_chunk(self._chunks, _DONE)) is not _DONE:
                yield chunk
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                await sync_to_async(close, thread_sensitive=True)()
