"""The gate between prefetched messages and worker threads, and the graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

from dramatiq.middleware import Middleware, SkipMessage

if TYPE_CHECKING:
    from .broker import PostgresBroker

logger = logging.getLogger(__name__)


class Gate(Middleware):
    """Added by :class:`~nexus.broker.PostgresBroker` to its middleware (last, so that every
    other middleware sees a skipped message's before *and* after hooks).

    - A prefetched message that was given back (lease lapsed, shutdown) is skipped by the
      thread that takes it from Dramatiq's work queue: it never runs here, and it is ready
      for other workers already.
    - On SIGTERM (or ``Worker.stop()``) the broker stops claiming at once and gives back
      every prefetched message not started, while running jobs finish.  Dramatiq's own stop
      only begins after up to a second, and gives prefetched messages back only once the
      longest running job ended; so the worker process's SIGTERM handler is wrapped too.
    """

    def before_process_message(self, broker, message) -> None:
        consumer = getattr(message, "consumer", None)
        if consumer is not None and not consumer.start(message):
            raise SkipMessage(f"message {message.message_id} was given back")

    def before_worker_shutdown(self, broker: PostgresBroker, worker) -> None:
        broker.drain()

    def after_worker_boot(self, broker: PostgresBroker, worker) -> None:
        broker.draining.clear()  # a new Worker on a broker whose previous one stopped
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):  # not under the dramatiq CLI: leave the default alone
            return

        def on_sigterm(signum, frame):
            # No database work in a signal handler: a thread gives the messages back.
            threading.Thread(target=broker.drain, name="nexus-broker-drain", daemon=True).start()
            previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
