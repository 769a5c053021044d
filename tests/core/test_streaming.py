"""core.streaming: a synchronous iterator streamed under ASGI chunk by chunk."""

import threading

from asgiref.sync import async_to_sync

from core.streaming import SyncStreamingResponse


def test_chunks_are_pulled_one_at_a_time_and_the_source_is_closed():
    pulled, closed = [], []

    def chunks():
        try:
            for number in range(3):
                pulled.append(number)
                yield f"chunk {number}\n".encode()
        finally:
            closed.append(threading.get_ident())

    response = SyncStreamingResponse(chunks())
    seen = []

    async def consume():
        async for chunk in response:
            # Only the chunk at hand was read from the source: nothing read ahead.
            seen.append((chunk, list(pulled)))
            if len(seen) == 2:
                break

    async_to_sync(consume)()
    assert seen == [(b"chunk 0\n", [0]), (b"chunk 1\n", [0, 1])]
    # Stopped early: the source was closed, on the thread it ran in (this test's).
    assert closed == [threading.get_ident()]


def test_under_wsgi_it_is_a_plain_streaming_response():
    response = SyncStreamingResponse(iter([b"a", b"b"]))
    assert b"".join(response) == b"ab"
