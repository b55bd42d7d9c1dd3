"""`orderengine order | watch | orders`: place, follow and list orders through the HTTP API and
the WebSocket, as any client would.

Exit status: 0 the order was `confirmed`; 1 it ended `failed` or `cancelled`; 2 nothing to say
about an outcome: bad usage, a request the server refused (any 4xx, e.g. a validation error or an
unknown order), a server that cannot be reached or is unavailable (5xx), or a socket that dropped
and did not come back; 130 interrupted, 141 stdout closed by its reader (the order itself goes on).
"""
from __future__ import annotations

import functools
import os
import sys
import urllib.parse
from typing import Any, Callable

import click

from orderengine.client.follow import Reconnecting, SocketRefused, StreamLost, follow
from orderengine.client.http import Api, ApiError, ClientError, Unreachable
from orderengine.client.render import EventFormatter, orders_table
from orderengine.client.view import HumanView, JsonView, console_for, json_line

EXIT_CONFIRMED = 0
EXIT_NOT_FILLED = 1     # failed or cancelled
EXIT_ERROR = 2          # usage, refusal, connection: no outcome to report
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a tool killed by SIGPIPE (`… | head -2`)
OUTCOMES = {"confirmed": EXIT_CONFIRMED, "failed": EXIT_NOT_FILLED, "cancelled": EXIT_NOT_FILLED}
AUTH_HINT = "pass an API key with --key or the ORDERENGINE_KEY environment variable"

EXIT_HELP = ("Exit status: 0 confirmed; 1 failed or cancelled; 2 bad usage, a request the server "
             "refused (4xx, e.g. a validation error or an unknown order), a server that cannot be reached "
             "or is unavailable (5xx), or a socket that dropped for good; 130 interrupted.")


def exit_status(terminal_status: str) -> int:
    """The exit status for an order that ended in `terminal_status`."""
    return OUTCOMES.get(terminal_status, EXIT_ERROR)


def default_url() -> str:
    """http://127.0.0.1:$PORT, PORT as the engine itself reads it (environment, then `.env`)."""
    from orderengine.config import ConfigError, load_settings
    try:
        port = load_settings().port
    except ConfigError as exc:
        raise click.UsageError(f"cannot tell the engine's default URL ({exc}); pass --url or set "
                               "ORDERENGINE_URL") from None
    return f"http://127.0.0.1:{port}"


def connection_options(command: Callable) -> Callable:
    """--url, --key, --json: shared by the three commands; the command receives `api` and `as_json`."""
    @click.option("--url", envvar="ORDERENGINE_URL", show_envvar=True, metavar="URL",
                  help="The engine's address [default: http://127.0.0.1:$PORT].")
    @click.option("--key", envvar="ORDERENGINE_KEY", show_envvar=True, metavar="KEY",
                  help="API key, sent as 'Authorization: Bearer KEY' (needed when the engine runs "
                       "AUTH=keys).")
    @click.option("--json", "as_json", is_flag=True,
                  help="Machine output: one JSON object per line, no spinner, no colour.")
    @functools.wraps(command)
    def wrapper(url: str | None, key: str | None, as_json: bool, **kwargs: Any) -> None:
        try:
            api = Api(url or default_url(), key or None)
        except ClientError as exc:
            raise click.UsageError(str(exc)) from None
        try:
            command(api=api, as_json=as_json, **kwargs)
        except KeyboardInterrupt:   # while following, _follow says how to pick the order up again
            click.echo("orderengine: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:     # the reader went away: stop quietly, as `head` expects
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
    return wrapper


@click.command(epilog=EXIT_HELP)
@click.argument("token_in")
@click.argument("token_out")
@click.argument("amount")
@click.option("--slippage-bps", type=int, metavar="N",
              help="Slippage tolerance, 0..10000 [server default: 50].")
@click.option("--client-order-id", metavar="ID",
              help="Your own reference for the order (at most 64 characters).")
@click.option("--idempotency-key", metavar="K",
              help="Sent as Idempotency-Key: the same key with the same order places it only once.")
@connection_options
def order(api: Api, as_json: bool, token_in: str, token_out: str, amount: str, slippage_bps: int | None,
          client_order_id: str | None, idempotency_key: str | None) -> None:
    """Place a MARKET order selling AMOUNT of TOKEN_IN for TOKEN_OUT, and show its progress live
    until it ends. Tokens are symbols (SOL, USDC, USDT) or mint addresses."""
    body: dict[str, Any] = {"type": "MARKET", "tokenIn": token_in, "tokenOut": token_out, "amountIn": amount}
    if slippage_bps is not None:
        body["slippageBps"] = slippage_bps
    if client_order_id is not None:
        body["clientOrderId"] = client_order_id
    view = _view(as_json, EventFormatter(token_in, token_out))
    with view:
        try:
            answer = api.place_order(body, idempotency_key)
        except ClientError as exc:
            _fail(view, exc)
        accepted = answer.body if isinstance(answer.body, dict) else {}
        order_id = str(accepted.get("orderId"))
        view.accepted(accepted, answer.headers.get("Idempotent-Replayed") == "true")
        sys.exit(_follow(view, api, order_id, 0, placed=True))


@click.command(epilog=EXIT_HELP)
@click.argument("order_id")
@click.option("--since", type=click.IntRange(min=0), default=0, metavar="N",
              help="Show only the events after seq N.")
@connection_options
def watch(api: Api, as_json: bool, order_id: str, since: int) -> None:
    """Follow an existing order: its events so far, then live ones, until it ends."""
    view = _view(as_json, EventFormatter())
    with view:
        sys.exit(_follow(view, api, order_id, since))


@click.command(epilog="Exit status: 0 listed; 2 bad usage, a request the server refused (4xx), or a server "
                      "that cannot be reached or is unavailable (5xx).")
@click.option("--status", metavar="S",
              help="Only orders in this status (pending, …, confirmed, failed, cancelled).")
@click.option("--client-order-id", metavar="ID", help="Only orders with this clientOrderId.")
@click.option("--limit", type=int, metavar="N", help="Orders per page, 1..500 [server default: 50].")
@click.option("--all", "all_pages", is_flag=True, help="Every page, not only the newest (follows `next`).")
@connection_options
def orders(api: Api, as_json: bool, status: str | None, client_order_id: str | None, limit: int | None,
           all_pages: bool) -> None:
    """List orders, newest first."""
    out, err = console_for(sys.stdout), console_for(sys.stderr, plain=as_json)
    listed: list[dict[str, Any]] = []
    before = None
    try:
        while True:
            page = api.orders_page(status=status, clientOrderId=client_order_id, limit=limit, before=before)
            page_orders = page.get("orders") or []
            if as_json:
                for snapshot in page_orders:
                    click.echo(json_line(snapshot))
            listed.extend(page_orders)
            before = page.get("next")
            if not before or not all_pages:
                break
    except ClientError as exc:
        _report(err, exc)
        sys.exit(EXIT_ERROR)
    if not as_json:
        if listed:
            out.print(orders_table(listed))
        else:
            out.print("no orders")
    if before:
        err.print("(more orders: pass --all, or --limit up to 500)", style="dim")


def register(group: click.Group) -> None:
    for command in (order, watch, orders):
        group.add_command(command)


def _view(as_json: bool, formatter: EventFormatter) -> HumanView | JsonView:
    err = console_for(sys.stderr, plain=as_json)
    return JsonView(sys.stdout, err) if as_json else HumanView(console_for(sys.stdout), err, formatter)


def _follow(view: HumanView | JsonView, api: Api, order_id: str, since: int, placed: bool = False) -> int:
    """Show the order's events until the terminal one; the exit status it calls for. Cut off after
    the order is known to exist (`placed`, or an event seen), it says how to pick the order up."""
    last = since
    try:
        for item in follow(api, order_id, since):
            if isinstance(item, Reconnecting):
                view.reconnecting(item)
                continue
            view.event(item)
            last = int(item.data["seq"])
            if item.terminal:
                return exit_status(item.status)
    except KeyboardInterrupt:
        view.note(f"stopped following; the order goes on: orderengine watch {order_id} --since {last}")
        return EXIT_INTERRUPTED
    except (StreamLost, Unreachable) as exc:
        if not (placed or last > since):
            _fail(view, exc)
        view.note(f"orderengine: {exc}; the order goes on: orderengine watch {order_id} --since {last}")
        return EXIT_ERROR
    except ClientError as exc:
        _fail(view, exc)
    # the order had ended at or before `since`: its snapshot says how
    try:
        status = api.call("GET", f"/api/orders/{urllib.parse.quote(order_id, safe='')}").body["status"]
    except ClientError as exc:
        _fail(view, exc)
    view.note(f"the order had already ended ({status}) at or before seq {since}")
    return exit_status(status)


def _fail(view: HumanView | JsonView, exc: ClientError) -> None:
    view.__exit__(None, None, None)   # the spinner goes before the message
    _report(view.err, exc)
    sys.exit(EXIT_ERROR)


def _report(err, exc: ClientError) -> None:
    """The error on stderr, with each field the server named and what to do about a 401 or a 429/503."""
    err.print(f"orderengine: {exc}", style="red", markup=False)
    fields = getattr(exc, "fields", None) or {}
    for name, problems in fields.items():
        text = "; ".join(map(str, problems)) if isinstance(problems, list) else str(problems)
        err.print(f"  {name}: {text}", markup=False)
    status = getattr(exc, "status", None)
    if status == 401 or (isinstance(exc, SocketRefused) and exc.unauthorized):
        err.print(f"hint: {AUTH_HINT}", markup=False)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, ApiError) and retry_after:
        err.print(f"  the server asks to try again in {retry_after} s", markup=False)
