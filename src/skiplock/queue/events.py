"""The engine's event stream, as the API and other readers use it.

A job's state, progress and log events are rows of ``job_events``, numbered per job by ``seq``.
History is read in pages with :meth:`Client.events`; live events come from the engine's
:class:`EventHub` (``engine.hub``):

- ``hub.subscribe_job(job_id, after)``: that job's events with seq > after, history first, then
  live, in order, with no gaps and no duplicates;
- ``hub.subscribe_all(queue=, task=, job_ids=)``: every new event of every job (optionally
  filtered: of one queue, one task, a set of jobs such as a workflow's steps);
- ``await sub.get()`` gives the next :class:`JobEvent`; it raises :class:`EventsMissed` when events
  may have been missed (resume a job's stream from ``sub.last_seq``; an all-jobs subscriber
  reloads what it shows) and :class:`SubscriptionClosed` once ``sub.close()`` was called;
- ``hub.unsubscribe(sub)`` when done (always: a finally).
"""

from __future__ import annotations

from skiplock.queue._hub import (
    EventHub,
    EventsMissed,
    JobEvent,
    Subscription,
    SubscriptionClosed,
    decode_data,
)

__all__ = ["EventHub", "EventsMissed", "JobEvent", "Subscription", "SubscriptionClosed", "decode_data"]
