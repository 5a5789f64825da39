"""The FHIR push adapter under the dispatcher's concurrency: many sender threads, several
receivers, real sockets."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from adapters.channels import Sent
from adapters.fhir_push import FhirPush
from tests.delivery.receivers import Receiver, Reply


def test_many_sender_threads_lose_no_answer() -> None:
    """48 threads push 6,000 messages to three receivers through one channel, as the
    dispatcher's senders do: every answer comes back, and every message is taken once.
    With one httpx client shared by the threads, httpcore 1.0.9's pool closed connections
    it had handed to another thread (encode/httpcore#1110): sends failed with EBADF or a read
    timeout after the receiver had the message, which the dispatcher would have sent again
    (this test failed in 3 of 3 runs with the shared client, and 1-3 sends a run failed in
    the same load outside the suite)."""
    receivers = [Receiver(f"r{n}", keep_alive=True) for n in range(3)]
    for r in receivers:
        r.reply = lambda _h: Reply(200, delay=0.002)
        r.start()
    push = FhirPush(timeout=5.0)
    n = 6000

    def send(i: int) -> Sent:
        body = json.dumps({"resourceType": "Bundle", "entry": [{"resource": {"id": str(i)}}]})
        return push.send(receivers[i % 3].url, body.encode(), timeout=5.0)

    try:
        with ThreadPoolExecutor(48) as pool:
            outcomes = list(pool.map(send, range(n)))
    finally:
        push.close()
        for r in receivers:
            r.stop()
    failed = Counter(o.error.split(" from ")[0] for o in outcomes if not o.ok)
    assert not failed
    taken = Counter(h for r in receivers for h in r.accepted_ids())
    assert sum(taken.values()) == n
    assert len(taken) == n  # none twice


def test_each_thread_sends_on_its_own_client_and_close_closes_them_all() -> None:
    push = FhirPush(timeout=1.0)
    mine = push.client
    assert push.client is mine  # kept for the thread's next sends
    theirs: list[httpx.Client] = []
    other = threading.Thread(target=lambda: theirs.append(push.client))
    other.start()
    other.join()
    assert theirs[0] is not mine
    push.close()
    assert mine.is_closed
    assert theirs[0].is_closed


def test_a_client_given_by_the_caller_is_shared_and_left_open() -> None:
    given = httpx.Client()
    push = FhirPush(client=given)
    seen: list[httpx.Client] = []
    other = threading.Thread(target=lambda: seen.append(push.client))
    other.start()
    other.join()
    assert seen == [given]
    assert push.client is given
    push.close()
    assert not given.is_closed
    given.close()
