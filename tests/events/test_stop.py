"""The producer's stop on SIGINT/SIGTERM, as pure logic: no broker needed.

The bug this guards: the handler called ``threading.Event.set()``, which takes a lock the main
thread may already hold inside ``Event.wait``; a SIGTERM that landed there hung the producer
for good (seen once in CI: no report, no exit). Here the handler is run at *every* line the
main thread executes inside the pacer's wait, which is where a real signal can land, and every
such wait must return. Each case runs in a child process so that a deadlock fails by timeout
instead of hanging the session.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from tripstream.events.producer import Pacer, StopFlag

from tests.conftest import ROOT

CHILD = r"""
import signal, sys, threading
from tripstream.events.producer import Pacer, StopFlag, TripProducer
from tripstream.config import KafkaSettings

producer = TripProducer(KafkaSettings(bootstrap="127.0.0.1:1"), "t")
restore = producer._install_signals()
handler = signal.getsignal(signal.SIGTERM)
assert callable(handler)
for at in range(1, 40):  # the lines up to and around the first naps
    producer.stop = StopFlag()
    pacer = Pacer(1.0, producer.stop)
    pacer.wait(0)
    seen = 0

    def tracer(frame, event, arg):
        global seen
        if event == "line":
            seen += 1
            if seen == at:
                handler(signal.SIGTERM, frame)  # a signal landing exactly here
        return tracer

    sys.settrace(tracer)
    pacer.stop = producer.stop
    pacer.wait(1000)  # a second of event clock: more lines than `at` reaches
    sys.settrace(None)
    assert seen >= at and producer.stop.is_set(), (at, seen)
restore()
print("lines", at)
"""


def test_a_signal_anywhere_inside_the_wait_ends_it() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lines", "39"], result.stdout


def test_stop_from_another_thread_wakes_the_wait() -> None:
    stop = StopFlag()
    threading.Timer(0.1, stop.set).start()
    assert stop.wait(60) is True
    assert StopFlag().wait(0.01) is False


def test_pacer_wait_is_bounded_by_the_event_clock() -> None:
    stop = StopFlag()
    pacer = Pacer(1000.0, stop)
    pacer.wait(0)
    pacer.wait(100)  # 100 ms of event clock at 1000x: 0.1 ms, and it returns
    assert not stop.is_set()
