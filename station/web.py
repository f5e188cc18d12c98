"""The station's HTTP side: one page, its static files, a WebSocket of live updates, the strips.

Each browser gets only its page of beds (``PER_PAGE`` at most) over its WebSocket, a few times a
second, and only the waveform chunks it has not had yet, so the server holds 500 beds while a
tab draws 64. Strips render to PNG on first request, in a worker thread, and are cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from typing import Any, Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from station.state import StationState
from station.strip_png import render_strip

log = logging.getLogger(__name__)

#: Seconds between updates pushed to a page.
TICK_S: Final = 0.25
PER_PAGE: Final = 64
MAX_PER_PAGE: Final = 128
#: Rendered strip PNGs kept in memory.
PNG_CACHE: Final = 64
STATIC: Final = {
    "station.js": "text/javascript; charset=utf-8",
    "station.css": "text/css; charset=utf-8",
}


def _static(name: str) -> bytes:
    return resources.files("station").joinpath("static", name).read_bytes()


class StationApp:
    """The ASGI application over a ``StationState``; ``sources`` reports the feeds' health."""

    def __init__(self, state: StationState, clock: Callable[[], float], sources: Callable[[], list[dict[str, Any]]]):
        self.state = state
        self.clock = clock
        self.sources = sources
        self._png: OrderedDict[str, bytes] = OrderedDict()
        self._files = {name: _static(name) for name in (*STATIC, "index.html")}
        self.app = Starlette(
            routes=[
                Route("/", self.index),
                Route("/static/{name}", self.static),
                Route("/strips/{strip_id}.png", self.strip_png),
                Route("/strips/{strip_id}.json", self.strip_json),
                Route("/api/status", self.status),
                WebSocketRoute("/ws", self.ws),
            ]
        )

    async def index(self, request: Request) -> Response:
        return Response(self._files["index.html"], media_type="text/html; charset=utf-8")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404)
        return Response(self._files[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    async def strip_png(self, request: Request) -> Response:
        sid = request.path_params["strip_id"]
        png = self._png.get(sid)
        if png is None:
            strip = self.state.strips.get(sid)
            if strip is None:
                return Response("no such strip (not received, or older than the station keeps)", status_code=404)
            png = await run_in_threadpool(render_strip, strip)
            self._png[sid] = png
            while len(self._png) > PNG_CACHE:
                self._png.popitem(last=False)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def strip_json(self, request: Request) -> Response:
        strip = self.state.strips.get(request.path_params["strip_id"])
        if strip is None:
            return Response("no such strip", status_code=404)
        return Response(strip.to_json(), media_type="application/json")

    async def status(self, request: Request) -> Response:
        return JSONResponse(
            {
                "beds": len(self.state.beds),
                "alarms": len(self.state.alarms),
                "strips": len(self.state.strips),
                "received": self.state.counts,
                "sources": self.sources(),
            }
        )

    async def ws(self, ws: WebSocket) -> None:
        await ws.accept()
        view: dict[str, Any] = {"page": 0, "per_page": PER_PAGE, "q": "", "alarms_first": True, "seq": 0}
        sent_chunk: dict[str, int] = {}
        # A new page starts with the recent alarm list, then only what is new.
        last_alarm = max(0, self.state.alarm_seq - 50)

        async def receive() -> None:
            while True:
                msg = json.loads(await ws.receive_text())
                if isinstance(msg, dict) and isinstance(msg.get("view"), dict):
                    v = msg["view"]
                    with contextlib.suppress(TypeError, ValueError):
                        view["page"] = max(0, int(v.get("page", view["page"])))
                        view["per_page"] = min(MAX_PER_PAGE, max(1, int(v.get("per_page", view["per_page"]))))
                        view["q"] = str(v.get("q", view["q"]))[:64]
                        view["alarms_first"] = bool(v.get("alarms_first", view["alarms_first"]))
                        view["seq"] = int(v.get("seq", view["seq"]))

        reader = asyncio.create_task(receive())
        try:
            while not reader.done():
                beds, matching, page = self.state.view(
                    page=view["page"], per_page=view["per_page"], query=view["q"], alarms_first=view["alarms_first"]
                )
                now = self.clock()
                out_beds = []
                for b in beds:
                    row = b.summary(now)
                    after = sent_chunk.get(b.stream_id, 0)
                    row["chunks"] = [
                        {"seq": c.seq, "t_end": c.t_end, "fs": c.fs, "v": c.lead} for c in b.chunks if c.seq > after
                    ]
                    if b.chunks:
                        sent_chunk[b.stream_id] = b.chunks[-1].seq
                    out_beds.append(row)
                alarms = self.state.alarms_since(last_alarm)
                if alarms:
                    last_alarm = alarms[-1]["n"]
                await ws.send_text(
                    json.dumps(
                        {
                            "type": "tick",
                            "page": page,
                            "view_seq": view["seq"],
                            "per_page": view["per_page"],
                            "matching": matching,
                            "beds_total": len(self.state.beds),
                            "beds": out_beds,
                            "alarms": alarms,
                            "sources": self.sources(),
                        },
                        separators=(",", ":"),
                        allow_nan=False,
                    )
                )
                await asyncio.sleep(TICK_S)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the page went away
        except ValueError as exc:  # a value JSON cannot carry: this page reconnects, the others go on
            log.warning("station page update failed: %s", exc)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
