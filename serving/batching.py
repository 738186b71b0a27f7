"""Concurrent predictor calls of the transformer, merged: requests that arrive while a call is in flight go
together in the next one.

The first request of an idle transformer is sent at once (no waiting for company, so an idle server answers as
fast as before); while its call is in flight the next requests queue, and when it returns they go in one call
(up to ``max_rows`` rows), and so on. Each request gets its own rows of the answer, which are the numbers a call
of its own would have got: the predictor scores each row alone (XGBoost sums a row's leaves; the batch does not
enter). Under load, k requests per call pay one HTTP round trip of the transformer's client (~36-47% of its CPU
per request) and one predictor request instead of k.

A call that fails with a ``RequestError`` (the predictor refused a row) is retried one request at a time, so one
request's bad rows fail that request only; any other failure (the predictor is down) fails every request of the
call, as each of its own calls would have.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np
from prometheus_client import Histogram

from smart_energy.serving.logic import RequestError

CALL_REQUESTS = Histogram("se_predictor_call_requests", "Requests carried by one predictor call of the transformer "
                          "(next hour: requests that arrive during a call share the next one)",
                          buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64))

# one predictor call: (rows, headers of the first request, response headers to fill) -> (model version, outputs)
Call = Callable[[np.ndarray, dict | None, dict | None], Awaitable[tuple[str | None, list[tuple[str, str, np.ndarray]]]]]


@dataclass
class _Waiting:
    matrix: np.ndarray
    headers: dict | None
    future: asyncio.Future
    response_headers: dict = field(default_factory=dict)


class CallBatcher:
    def __init__(self, call: Call, max_rows: int):
        self.call = call
        self.max_rows = max_rows
        self.queue: list[_Waiting] = []
        self.busy = False
        self._task: asyncio.Future | None = None
        self.calls = 0  # predictor calls made, and requests they carried: the mean batch size, for the note
        self.requests = 0

    async def submit(self, matrix: np.ndarray, headers: dict | None = None,
                     response_headers: dict | None = None) -> tuple[str | None, list[tuple[str, str, np.ndarray]]]:
        """This request's (model version, [(output name, datatype, its rows)]) from the next predictor call."""
        waiting = _Waiting(matrix, headers, asyncio.get_running_loop().create_future())
        self.queue.append(waiting)
        if not self.busy:  # a task makes the calls until nobody waits; each request returns with its own answer
            self.busy = True
            self._task = asyncio.ensure_future(self._drain())
        answer = await waiting.future
        if response_headers is not None:
            response_headers.update(waiting.response_headers)
        return answer

    async def _drain(self) -> None:
        try:
            while self.queue:
                take, rows = 0, 0
                while take < len(self.queue) and (take == 0 or rows + len(self.queue[take].matrix) <= self.max_rows):
                    rows += len(self.queue[take].matrix)
                    take += 1
                group, self.queue = self.queue[:take], self.queue[take:]
                await self._call(group)
        finally:
            self.busy = False

    async def _call(self, group: list[_Waiting]) -> None:
        self.calls += 1
        self.requests += len(group)
        CALL_REQUESTS.observe(len(group))
        matrix = group[0].matrix if len(group) == 1 else np.concatenate([w.matrix for w in group])
        headers: dict = {}
        try:
            version, outputs = await self.call(matrix, group[0].headers, headers)
        except RequestError as err:
            if len(group) == 1:
                return _fail(group[0], err)
            for waiting in group:  # find whose rows were refused: each alone, as without batching
                await self._call([waiting])
            return
        except asyncio.CancelledError:  # the transformer is stopping
            for waiting in group + self.queue:
                _fail(waiting, PredictorCallCancelled("the transformer is stopping"))
            raise
        except Exception as err:  # noqa: BLE001 - each waiting request raises it, as its own call would have
            for waiting in group:
                _fail(waiting, err)
            return
        start = 0
        for waiting in group:
            stop = start + len(waiting.matrix)
            waiting.response_headers.update(headers)
            if not waiting.future.done():
                waiting.future.set_result((version, [(name, dtype, values[start:stop])
                                                     for name, dtype, values in outputs]))
            start = stop


class PredictorCallCancelled(Exception):
    """The call carrying this request was cancelled (the transformer is stopping)."""


def _fail(waiting: _Waiting, err: BaseException) -> None:
    if not waiting.future.done():
        waiting.future.set_exception(err)
