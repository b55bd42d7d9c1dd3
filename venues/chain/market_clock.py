"""Who plays the market, and when: one process per deployment, under a lease.

The ticks (`venues.market`) are played by whichever process holds the lease on
the `sim_market` row: it takes or renews it with a guarded UPDATE each time it
is asked (`MarketClock.play_due`, from the venues' `maintain()`), and a holder
that stops asking loses it after `lease_ms`. Ticks missed while nobody held it
are caught up (at most `max_catch_up` of them), all in one write transaction.
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from venues.chain.engines import writing
from venues.chain.programs import mid_price_of, program
from venues.chain.tables import insert_ignoring_conflicts, sim_market, sim_pools
from venues.market import MarketParams, play_tick

LEASE_MS = 5000

#: parses a locked pool row's state (the chain reuses what it has parsed already)
ParseState = Callable[[Any], dict[str, Any]]


class MarketClock:
    """Plays the market's due ticks, in the one process holding the lease."""

    def __init__(self, params: MarketParams, seed: int, clock: Callable[[], datetime],
                 lease_ms: int = LEASE_MS) -> None:
        self.params = params
        self.lease_ms = lease_ms
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._seed = seed
        self._clock = clock

    def tick_now(self) -> int:
        return int(self._clock().timestamp() * 1000) // self.params.tick_ms

    def play_due(self, engine: Engine, parse: ParseState) -> dict[str, tuple[int, dict[str, Any]]]:
        """Take or renew the lease, then play every tick due by now; returns the
        pools it moved, {pool_id: (new version, new state)}. Without the lease it
        plays nothing and returns {}. One write transaction either way."""
        now, tick = self._clock(), self.tick_now()
        with writing(engine) as conn:
            if not self._hold_lease(conn, now, tick):
                return {}
            market = conn.execute(sa.select(sim_market).where(sim_market.c.id == 1)).one()
            if market.tick >= tick:
                return {}
            return self._play(conn, market, tick, parse)

    def _hold_lease(self, conn: Connection, now: datetime, tick: int) -> bool:
        until = now + timedelta(milliseconds=self.lease_ms)
        taken = conn.execute(
            sim_market.update()
            .where(sim_market.c.id == 1,
                   sa.or_(sim_market.c.holder == self.holder, sim_market.c.holder.is_(None),
                          sim_market.c.lease_until < now))
            .values(holder=self.holder, lease_until=until))
        if taken.rowcount == 1:
            return True
        # the first process to get here starts the market at this tick (nothing to play yet)
        conn.execute(insert_ignoring_conflicts(conn, sim_market).values(
            id=1, tick=tick, anchors="{}", holder=self.holder, lease_until=until))
        return False

    def _play(self, conn: Connection, market: Any, tick: int,
              parse: ParseState) -> dict[str, tuple[int, dict[str, Any]]]:
        query = sa.select(sim_pools).order_by(sim_pools.c.pool_id)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        rows = [r for r in conn.execute(query) if mid_price_of(r.program) is not None]
        pools = {r.pool_id: (parse(r), program(r.program), mid_price_of(r.program)) for r in rows}
        anchors = json.loads(market.anchors)
        for t in range(max(market.tick + 1, tick - self.params.max_catch_up + 1), tick + 1):
            for pool_id, state in play_tick(pools, anchors, t, self._seed, self.params).items():
                pools[pool_id] = (state, *pools[pool_id][1:])
        moved = {}
        for r in rows:
            state = pools[r.pool_id][0]
            conn.execute(sim_pools.update().where(sim_pools.c.pool_id == r.pool_id)
                         .values(state=json.dumps(state, sort_keys=True), version=r.version + 1))
            moved[r.pool_id] = (r.version + 1, state)
        conn.execute(sim_market.update().where(sim_market.c.id == 1)
                     .values(tick=tick, anchors=json.dumps(anchors, sort_keys=True)))
        return moved
