"""The certification writer: an asyncio queue in front of ONE database connection.

Handlers enqueue a request and await its outcome. A single writer task takes whatever is queued
(up to `batch_max`) and commits the group in one transaction (services/certification.py); requests
arriving meanwhile form the next group.

Why (DESIGN.md facts): on SQLite a pool of BEGIN IMMEDIATE connections spends its p99 in busy-handler
sleeps, while one writer connection does not wait at all; on PostgreSQL one transaction per request
holds the hot row's lock through every commit, while a group commit pays one commit for many.
The same code therefore serves both databases with the same semantics.

Where the group's SQL runs (WriterMode), measured on the 2-core machine:
- INLINE (SQLite default): on the event loop's thread. SQLite calls take microseconds, and a second
  Python thread would only trade the GIL back and forth with the loop.
- ASYNC (PostgreSQL default, asyncpg): the same synchronous group code runs through SQLAlchemy's
  run_sync on the loop, and every network wait yields to the loop, which keeps reading requests.
- THREAD: a dedicated thread with a psycopg connection (the fallback when asyncpg is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tenant_app.domains import AMOUNT, ID, PERIOD, DomainError, IntDomain
from tenant_app.rules.errors import ErrorCode, RuleError, RuleViolationError
from tenant_app.services.certification import CertifyOutcome, CertifyRequest, commit_group, refused
from tenant_app.services.posting import RuleBook, load_rule_book

log = logging.getLogger(__name__)

MAX_PURPOSE = 255  # certification.purpose is VARCHAR(255)


class WriterMode(StrEnum):
    INLINE = "inline"
    THREAD = "thread"
    ASYNC = "async"


def default_mode(engine: Engine) -> WriterMode:
    if engine.dialect.name == "sqlite":
        return WriterMode.INLINE
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return WriterMode.THREAD
    return WriterMode.ASYNC


@dataclass(frozen=True)
class GroupResult:
    outcomes: list[CertifyOutcome]
    db_seconds: float


Waiter = asyncio.Future[tuple[CertifyOutcome, float]]


class CertificationWriter:
    def __init__(self, engine: Engine, *, batch_max: int = 512, mode: WriterMode | None = None,
                 on_group: Callable[[int], None] | None = None) -> None:
        self._engine = engine
        self._mode = mode or default_mode(engine)
        self._batch_max = batch_max
        self._on_group = on_group
        self._queue: asyncio.Queue[tuple[CertifyRequest, Waiter]] | None = None
        self._task: asyncio.Task[None] | None = None
        # THREAD mode: one thread owns the one connection (connections must not hop threads).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certify-writer")
        self._conn: Connection | None = None
        self._async_engine: AsyncEngine | None = None
        self._aconn: AsyncConnection | None = None
        self._book: RuleBook | None = None

    @property
    def mode(self) -> WriterMode:
        return self._mode

    async def start(self) -> None:
        if self._mode is WriterMode.ASYNC:
            url = self._engine.url.set(drivername="postgresql+asyncpg")
            self._async_engine = create_async_engine(url, pool_size=1, max_overflow=0)
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="certification-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._mode is WriterMode.THREAD:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        else:
            self._close()
        if self._aconn is not None:
            await self._aconn.close()
        if self._async_engine is not None:
            await self._async_engine.dispose()
        self._thread.shutdown(wait=True)

    async def certify(self, request: CertifyRequest) -> tuple[CertifyOutcome, float]:
        """The outcome, and the database time of the group it was committed in (for Server-Timing).

        A request outside the declared domains is refused here, before it can join a group.
        """
        if self._queue is None:
            raise RuntimeError("certification writer not started")
        errors = out_of_domain(request)
        if errors:
            return refused(request, errors), 0.0
        future: Waiter = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    def reload_rules(self) -> None:
        """Posting rules are data: forget the cached copy so the next group reads them again."""
        self._book = None

    async def _warm(self) -> None:
        """Open the connection and read the posting rules before the first request needs them."""
        def load(conn: Connection) -> None:
            with conn.begin():
                self._book = load_rule_book(conn)

        try:
            if self._mode is WriterMode.ASYNC:
                assert self._async_engine is not None
                self._aconn = await self._async_engine.connect()
                await self._aconn.run_sync(load)
            elif self._mode is WriterMode.THREAD:
                await asyncio.get_running_loop().run_in_executor(
                    self._thread, lambda: load(self._own_connection()))
            else:
                load(self._own_connection())
        except Exception:  # e.g. not migrated yet: the first group will try again and report it
            log.warning("certification writer could not warm up", exc_info=True)

    async def _run(self) -> None:
        assert self._queue is not None
        await self._warm()
        while True:
            first = await self._queue.get()
            group = [first]
            while len(group) < self._batch_max and not self._queue.empty():
                group.append(self._queue.get_nowait())
            requests = [request for request, _ in group]
            try:
                result = await self._commit(requests)
            except Exception as error:  # the group failed as a whole: every waiter gets the error
                log.exception("certification group of %d failed", len(group))
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            if self._on_group is not None:
                self._on_group(len(group))
            for (_, future), outcome in zip(group, result.outcomes, strict=True):
                if not future.done():  # the client may have gone away
                    future.set_result((outcome, result.db_seconds))

    async def _commit(self, requests: list[CertifyRequest]) -> GroupResult:
        started = time.perf_counter()
        if self._mode is WriterMode.ASYNC:
            assert self._async_engine is not None
            if self._aconn is None or self._aconn.closed:
                self._aconn = await self._async_engine.connect()
            try:
                outcomes = await self._aconn.run_sync(self._commit_on, requests)
            except DBAPIError as error:
                if error.connection_invalidated:
                    await self._aconn.close()
                    self._aconn = None
                raise
        elif self._mode is WriterMode.THREAD:
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._thread, self._commit_on_own_connection, requests)
        else:
            outcomes = self._commit_on_own_connection(requests)
        return GroupResult(outcomes, time.perf_counter() - started)

    # ---- synchronous group commit (on the loop, in run_sync's greenlet, or on the writer thread) ---

    def _own_connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._engine.connect()
        return self._conn

    def _commit_on_own_connection(self, requests: list[CertifyRequest]) -> list[CertifyOutcome]:
        conn = self._own_connection()
        try:
            return self._commit_on(conn, requests)
        except DBAPIError as error:
            if error.connection_invalidated:
                self._close()
            raise

    def _commit_on(self, conn: Connection, requests: list[CertifyRequest]) -> list[CertifyOutcome]:
        if self._book is None:
            with conn.begin():
                self._book = load_rule_book(conn)
        return commit_isolated(conn, self._book, requests)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def out_of_domain(request: CertifyRequest) -> list[RuleError]:
    """The edge's domains again, for callers that did not come through the API or a form."""
    errors: list[RuleError] = []
    checks: list[tuple[IntDomain, int | None]] = [
        (ID, request.budget_line_id), (AMOUNT, request.amount), (PERIOD, request.period)]
    for domain, value in checks:
        if value is None:
            continue
        try:
            domain.from_json(value)
        except DomainError as error:
            errors.append(RuleError(error.code, error.message_zh, error.message_en,
                                    {domain.name: str(value)[:32]}))
    if len(request.purpose) > MAX_PURPOSE:
        errors.append(RuleError(ErrorCode.INVALID_INPUT, f"用途說明超過 {MAX_PURPOSE} 字",
                                f"purpose is longer than {MAX_PURPOSE} characters"))
    return errors


def commit_isolated(conn: Connection, book: RuleBook, requests: list[CertifyRequest]) -> list[CertifyOutcome]:
    """Commit a group so that no request can fail another: each is decided on its own.

    The whole group is tried in one transaction (the fast, usual case). If the database refuses
    it (a constraint, a value it cannot store, anything), the group is split in halves and each
    half retried in its own transaction, down to the single request that fails, which alone is
    refused with a code. k bad requests in a group of n cost about k * log2(n) extra transactions.
    """
    try:
        with conn.begin():
            return commit_group(conn, book, requests)
    except DBAPIError as error:
        if error.connection_invalidated:
            raise
        failure: Exception = error
    except (RuleViolationError, ArithmeticError, ValueError, TypeError, RuntimeError) as error:
        failure = error
    if len(requests) == 1:
        log.warning("certification refused by the database: %s", str(failure)[:300])
        return [refused(requests[0], [_database_refusal(failure, requests[0])])]
    middle = len(requests) // 2
    return commit_isolated(conn, book, requests[:middle]) + commit_isolated(conn, book, requests[middle:])


def _database_refusal(failure: Exception, request: CertifyRequest) -> RuleError:
    if isinstance(failure, RuleViolationError) and failure.errors:
        return failure.errors[0]
    if isinstance(failure, IntegrityError):
        return RuleError(ErrorCode.CONSTRAINT_VIOLATED, "資料庫拒絕此筆簽證",
                         "the database refused this certification (a constraint)",
                         {"budget_line_id": request.budget_line_id})
    return RuleError(ErrorCode.INVALID_INPUT, "資料庫無法儲存此筆簽證",
                     "the database could not store this certification",
                     {"budget_line_id": request.budget_line_id})
