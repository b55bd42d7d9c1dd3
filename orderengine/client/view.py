"""Where the client's output goes: lines for a person (with a live spinner on a terminal) or JSON
lines for a program. Results go to stdout; notes and errors to stderr."""
from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from orderengine.client.follow import Event, Reconnecting
from orderengine.client.render import STATUS_STYLES, EventFormatter

#: lines written where no terminal reads them are never wrapped or cut
PIPE_WIDTH = 10_000


def console_for(stream: TextIO, plain: bool = False) -> Console:
    """A rich console on `stream`: colour and animation only on a terminal (rich decides, and
    honours NO_COLOR and FORCE_COLOR), none at all when `plain`; nothing is wrapped when a program
    reads it."""
    console = Console(file=stream, highlight=False, soft_wrap=True, no_color=plain)
    if not console.is_terminal:
        console = Console(file=stream, highlight=False, soft_wrap=True, no_color=plain, width=PIPE_WIDTH)
    return console


class _Waiting:
    """The spinner line: the order's current status and the time since we started."""

    def __init__(self) -> None:
        self.status = "connecting"
        self.note = ""
        self.started = time.monotonic()
        self.spinner = Spinner("dots")

    def __rich__(self) -> Spinner:
        elapsed = time.monotonic() - self.started
        self.spinner.update(text=Text.assemble(
            (self.status, STATUS_STYLES.get(self.status, "")), f"  {elapsed:.1f}s",
            (f"  {self.note}" if self.note else "", "dim")))
        return self.spinner


class HumanView:
    """One line per event on stdout; between events, on a terminal, a spinner with the status."""

    def __init__(self, out: Console, err: Console, formatter: EventFormatter | None = None) -> None:
        self.out, self.err = out, err
        self.formatter = formatter or EventFormatter()
        self.waiting = _Waiting()
        self.live: Live | None = None

    def __enter__(self) -> "HumanView":
        if self.out.is_terminal:
            self.live = Live(self.waiting, console=self.out, transient=True, refresh_per_second=12.5,
                             redirect_stdout=False, redirect_stderr=False)
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def accepted(self, body: dict[str, Any], replayed: bool) -> None:
        again = " (Idempotency-Key seen before: this is the order it made)" if replayed else ""
        self.out.print(Text.assemble("order ", (str(body.get("orderId")), "bold"), f" accepted{again}"))
        self.waiting.status = str(body.get("status", "pending"))

    def event(self, event: Event) -> None:
        self.out.print(self.formatter.line(event.data))
        self.waiting.status, self.waiting.note = event.status, ""

    def reconnecting(self, r: Reconnecting) -> None:
        self.waiting.note = f"reconnecting ({r.attempt}/{r.of})"
        self.note(f"{r.why}; reconnecting in {r.delay_s:g} s ({r.attempt}/{r.of}) from seq {r.since}")

    def note(self, text: str) -> None:
        """A line on stderr; the spinner steps aside while it is written (both may be one terminal)."""
        if self.live is not None:
            self.live.stop()
        self.err.print(Text(text, "yellow"))
        if self.live is not None:
            self.live.start()


def json_line(obj: Any) -> str:
    """`obj` as compact JSON on one line."""
    return json.dumps(obj, separators=(",", ":"))


class JsonView:
    """One JSON object per line on stdout: the accepted answer, then each event as received."""

    def __init__(self, stdout: TextIO | None = None, err: Console | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.err = err or console_for(sys.stderr, plain=True)

    def __enter__(self) -> "JsonView":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def accepted(self, body: dict[str, Any], replayed: bool) -> None:
        self._write(json_line(body))

    def event(self, event: Event) -> None:
        # as received; a message sent over several lines is re-encoded so each object is one line
        self._write(event.raw if "\n" not in event.raw else json_line(event.data))

    def reconnecting(self, r: Reconnecting) -> None:
        self.note(f"{r.why}; reconnecting in {r.delay_s:g} s ({r.attempt}/{r.of}) from seq {r.since}")

    def note(self, text: str) -> None:
        self.err.print(text)

    def _write(self, line: str) -> None:
        self.stdout.write(line + "\n")
        self.stdout.flush()
