"""The embedded broker: kombu's filesystem transport, made safe for several processes.

kombu's own filesystem transport writes a message file in place under a lock that its reader
never takes, so a worker polling at the wrong moment can pick up a half-written file and lose
the message; and it moves consumed files to the system temp folder, a copy when that is
another file system. Here a message is written under a hidden temporary name and renamed into
place (readers see whole files only), and a reader claims a file by renaming it within the
same folder — an atomic step only one consumer can win.

A consumer reads its queues in a fixed order, interactive work first
(:func:`shared.celery_config.queue_rank`), not kombu's round-robin: a free worker process
never takes a batch job while an interactive one waits.

Between polls a consumer waits ``polling_interval``, but an ack or reject (a prefetch slot
freed: with late acks and a prefetch of 1, how a worker process becomes free) ends the wait at
once, so a free process takes the next waiting job without sleeping out the interval.

Registered under the ``filesystem://`` URL scheme by :mod:`web.celery_init`.
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from kseg.shared.messaging.celery_config import queue_rank


def job_id_of(payload: Any) -> str | None:
    """The job id a raw ``kseg.run_job`` message carries (None for any other message)."""
    try:
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = loads(bytes_to_str(body))[0]
        return str(args[0]) if args else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


class Channel(filesystem.Channel):
    # Celery acks from its pool's result thread, while the consumer thread waits between polls.
    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)
        self.connection.slot_freed.set()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)
        self.connection.slot_freed.set()

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot keeps the half-written file out of every reader's match.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            source = os.path.join(self.data_folder_in, name)
            claimed = os.path.join(self.data_folder_in, f".{name}.{os.getpid()}.taken")
            try:
                os.rename(source, claimed)  # atomic: exactly one consumer wins the file
            except OSError:
                continue  # another consumer took it first
            try:
                with open(claimed, "rb") as handle:
                    payload = handle.read()
                os.remove(claimed)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise Empty()

    def _poll(self, cycle: Any, callback: Any, timeout: float | None = None) -> Any:
        """Deliver the next message of the first queue, in rank order, that has one."""
        for queue in sorted(self._active_queues, key=queue_rank):
            try:
                message = self._get(queue)
            except Empty:
                continue
            return callback(message, queue)
        raise Empty()

    def waiting_job_ids(self, queue: str) -> list[str]:
        """The job ids of the messages waiting in ``queue`` (for the sweeper)."""
        wanted = f"{queue}.msg"
        ids = []
        for name in os.listdir(self.data_folder_in):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            try:
                with open(os.path.join(self.data_folder_in, name), "rb") as handle:
                    job_id = job_id_of(loads(bytes_to_str(handle.read())))
            except (OSError, ValueError):
                continue  # taken meanwhile
            if job_id:
                ids.append(job_id)
        return ids

    def _size(self, queue: str) -> int:
        wanted = f"{queue}.msg"
        return sum(
            1
            for name in os.listdir(self.data_folder_in)
            if not name.startswith(".") and name.partition(".")[2] == wanted
        )


class Transport(filesystem.Transport):
    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.slot_freed = threading.Event()

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """kombu's virtual ``drain_events``, with the sleep between polls cut short by an
        ack or reject."""
        started = monotonic()
        interval = self.polling_interval
        if timeout and interval and interval > timeout:
            interval = timeout
        while True:
            # Cleared before polling: a slot freed after this point is either seen by the
            # poll or ends the wait below.
            self.slot_freed.clear()
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                # Celery's loop checks for a shutdown only between drains (of up to 2 s, and
                # one more after the request): end the drain at once when one is pending.
                if _worker_stopping() or (timeout is not None and monotonic() - started >= timeout):
                    raise TimeoutError() from None  # socket.timeout, as kombu raises
                if interval is not None:
                    self.slot_freed.wait(interval)
            else:
                return


def _worker_stopping() -> bool:
    """Whether this process is a Celery worker asked to shut down (warm or cold)."""
    from celery.worker import state

    # As Celery's own check: the flags hold the exit code once set, and 0 == False.
    flags = (state.should_stop, state.should_terminate)
    return any(flag is not None and flag is not False for flag in flags)


def register() -> None:
    """Make ``filesystem://`` mean this transport in this process."""
    TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
