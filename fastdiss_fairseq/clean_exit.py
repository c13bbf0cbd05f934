"""fairseq-train that stops on --max-update exits cleanly, not with SIGABRT.

fairseq prefetches training batches in a daemon thread (`BackgroundConsumer`, one per epoch
iterator, `--data-buffer-size` batches ahead). A training that stops in the middle of an
epoch (`--max-update`, `--stop-time-hours`) leaves that thread running; when the interpreter
exits while the thread is inside torch's C++ code (collating the next batch), the thread is
torn down mid-call and the process dies with "terminate called without an active exception"
(exit -6) after the checkpoint is saved: a finished run that scripts (`set -e`) and CI read as
a failure. It happens on torch 2.13 with Python 3.11 whenever the thread is mid-batch, so it
is a race that grows with batch-building time.

An `atexit` hook (it runs after the main thread has finished and before daemon threads are
torn down) tells each live consumer to stop after the batch it is building and empties its
queue so that its final put cannot block, then waits for it.
"""

import atexit
import logging
import queue
import sys
import threading

logger = logging.getLogger(__name__)

# Long enough for any one batch to finish collating; a consumer still alive after it is left
# to the interpreter as before (the hook never hangs an exit).
JOIN_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.05


def prefetch_threads():
    iterators = sys.modules.get("fairseq.data.iterators")
    if iterators is None:  # no fairseq batch iterator was ever made
        return []
    BackgroundConsumer = iterators.BackgroundConsumer
    return [t for t in threading.enumerate() if isinstance(t, BackgroundConsumer) and t.is_alive()]


def drain(consumer) -> None:
    try:
        while True:
            consumer._queue.get_nowait()
    except queue.Empty:
        pass


def stop_prefetch_threads() -> None:
    for consumer in prefetch_threads():
        # BackgroundConsumer.run leaves its loop once count >= _max_len, checked after each put:
        # with 0 it stops after the batch it is building now.
        consumer._max_len = 0
        for _ in range(int(JOIN_TIMEOUT_SECONDS / POLL_SECONDS)):
            drain(consumer)
            consumer.join(POLL_SECONDS)
            if not consumer.is_alive():
                break
        if consumer.is_alive():
            logger.warning("fastdiss: fairseq's batch prefetch thread did not stop within %.0fs",
                           JOIN_TIMEOUT_SECONDS)


def install() -> None:
    atexit.register(stop_prefetch_threads)
