"""/health and /api/venues: what operators and clients ask about the engine itself."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from orderengine.amounts import decimal_str
from orderengine.logs import redact

bp = Blueprint("system", __name__)


@bp.get("/health")
def health():
    checks = current_app.extensions["orderengine"].health()
    # The dependencies decide; a venue that failed to load is reported, not fatal.
    failing = [name for name in ("database", "redis") if name in checks and not checks[name]["ok"]]
    ok = not failing
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    return jsonify(body), 200 if ok else 503


@bp.get("/api/venues")
def venues():
    runtime = current_app.extensions["orderengine"]
    listed = []
    for name, venue in sorted(runtime.venues.items()):
        try:
            pools = venue.pools()
        except Exception as exc:  # a venue that does not answer is reported, not fatal
            listed.append({"name": name, "status": "unavailable", "error": redact(f"{type(exc).__name__}: {exc}"),
                           "pools": []})
            continue
        listed.append({"name": name, "status": "loaded",
                       "capabilities": sorted(getattr(venue, "capabilities", ())), "pools": [
            {"pool": p.pool_id, "tokens": [p.token_a, p.token_b], "feePct": decimal_str(p.fee_pct),
             "midPrice": decimal_str(p.mid_price),
             "liquidity": {k: decimal_str(v) for k, v in p.liquidity.items()}}
            for p in pools]})
    for name, error in sorted(runtime.registry.failures.items()):
        listed.append({"name": name, "status": "failed", "error": error, "pools": []})
    return jsonify({"venues": listed})
