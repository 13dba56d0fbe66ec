"""Driving load with wrk: Lua scripts that check every answer and report one JSON line."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = "BENCH_JSON "

# Counts answers that are not a 200 or that carry GraphQL errors, in every thread.
_CHECK = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then bad = bad + 1 end
end
"""

_DONE = """
function done(summary, latency, requests)
  local bad, ok = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("bad")
    ok = ok + (t:get("ok") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"bad":%d,' ..
    '"ok":%d,"socket_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    bad, ok, e.connect + e.read + e.write + e.status + e.timeout))
end
"""

# One reserve, then the capture of what it reserved, on each connection (one per thread, so
# the thread's globals are that connection's state). `ok` counts captured pairs. The request
# bodies and paths come first (GraphQL's or the raw routes'); both answers carry
# `"reservation":{"id":"..."` and, once captured, `"status":"CAPTURED"`.
_PAIRS = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  run, org = args[1], args[2]
  n, ok, bad, pending, last = 0, 0, 0, nil, nil
end
function request()
  if pending ~= nil then
    last = "capture"
    local body = string.format(CAPTURE, pending)
    pending = nil
    return wrk.format("POST", CAPTURE_PATH, nil, body)
  end
  n = n + 1
  last = "reserve"
  local body = string.format(RESERVE, org, run, tid, n, run, tid, n)
  return wrk.format("POST", RESERVE_PATH, nil, body)
end
function response(status, headers, body)
  if last == "reserve" then
    local id = string.match(body, '"reservation":{"id":"([^"]+)"')
    if status == 200 and id then pending = id else bad = bad + 1 end
  elseif status == 200 and string.find(body, '"status":"CAPTURED"', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
  end
end
"""
_GRAPHQL_PAIR = """
RESERVE_PATH, CAPTURE_PATH = "/graphql", "/graphql"
RESERVE = '{"query":"mutation R($i: ReserveCreditsInput!) { reserveCredits(input: $i) ' ..
  '{ __typename ... on ReservationCreated { reservation { id } } } }",' ..
  '"variables":{"i":{"organizationId":"%s","amountCredits":1,"reference":"bench-%s-%d-%d",' ..
  '"idempotencyKey":"bench-%s-%d-%d"}}}'
CAPTURE = '{"query":"mutation C($i: CaptureReservationInput!) { captureReservation(' ..
  'input: $i) { __typename ... on ReservationCaptured { reservation { id status } } } }",' ..
  '"variables":{"i":{"reservationId":"%s"}}}'
"""
_RAW_PAIR = """
RESERVE_PATH, CAPTURE_PATH = "/raw/reserve", "/raw/capture"
RESERVE = '{"organizationId":"%s","amountCredits":1,"reference":"bench-%s-%d-%d",' ..
  '"idempotencyKey":"bench-%s-%d-%d"}'
CAPTURE = '{"reservationId":"%s"}'
"""


@dataclass(frozen=True)
class Load:
    """One wrk run's figures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    bad: int
    ok: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "bad": self.bad,
        }


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: `make bench` installs it, or apt-get install wrk")
    return found


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def request_script(*, method: str, headers: dict[str, str], body: str | None) -> str:
    lines = [f'wrk.method = "{method}"']
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    return "\n".join(lines) + _CHECK + _DONE


def pairs_script(*, token: str, raw: bool = False) -> str:
    """reserve+capture pairs through GraphQL, or (`raw`) through the raw baseline's routes."""
    headers = f"""
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
"""
    return headers + (_RAW_PAIR if raw else _GRAPHQL_PAIR) + _PAIRS + _DONE


def run(
    url: str,
    script: str,
    *,
    seconds: float,
    threads: int,
    connections: int,
    args: tuple[str, ...] = (),
) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = Path(f.name)
    try:
        command = [
            require_wrk(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
        ]
        if args:
            command += ["--", *args]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    finally:
        path.unlink()
    line = next((x for x in done.stdout.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix(MARK))
    return Load(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        bad=raw["bad"] + raw["socket_errors"],
        ok=raw["ok"],
    )
