#!/usr/bin/env python3
"""serve_hostile.py: hostile requests against a running server, for serve_hostile.sh.

  serve_hostile.py http PORT --key K --body FILE
      malformed HTTP heads: each must get its 4xx/5xx with a JSON body (never a 200,
      never silence, never two answers), and a client trickling its head is cut.
  serve_hostile.py json PORT --key K --body FILE
      invalid JSON refused (400 invalid_json), error bodies valid UTF-8 JSON.
"""
import argparse
import json
import re
import socket
import sys
import time

from serve_client import trickle_head

FAILED = []


def check(cond, what):
    if not cond:
        FAILED.append(what)
        print("FAIL:", what, file=sys.stderr)


def exchange(port, data, timeout=5):
    """Sends data and reads until the server closes (or timeout): the raw bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        buf = b""
        while True:
            try:
                got = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not got:
                break
            buf += got
        return buf
    finally:
        s.close()


def answers(buf):
    """[(status, body bytes)] of every HTTP answer in buf."""
    out = []
    while buf:
        m = re.match(rb"HTTP/1\.[01] (\d{3})[^\r]*\r\n(.*?)\r\n\r\n", buf, re.S)
        if not m:
            break
        n = re.search(rb"(?im)^content-length:\s*(\d+)", m.group(2))
        ln = int(n.group(1)) if n else 0
        body = buf[m.end():m.end() + ln]
        out.append((int(m.group(1)), body))
        buf = buf[m.end() + ln:]
    return out


def one_json_error(buf, status, code, what):
    a = answers(buf)
    check(len(a) == 1, f"{what}: expected one answer, got {len(a)}: {buf[:200]!r}")
    if len(a) != 1:
        return
    st, body = a[0]
    check(st == status, f"{what}: status {st}, expected {status}: {body[:200]!r}")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        check(False, f"{what}: the body is not UTF-8 JSON: {body[:200]!r}")
        return
    check(doc.get("error", {}).get("code") == code, f"{what}: code {doc.get('error')}, expected {code}")


def predict_head(key, extra=b"", host=True, version=b"HTTP/1.1"):
    return (b"POST /v1/models/readmission/predict " + version + b"\r\n" + (b"Host: x\r\n" if host else b"") +
            b"Content-Type: application/json\r\nAuthorization: Bearer " + key.encode() + b"\r\n" + extra)


def cmd_http(a):
    body = open(a.body, "rb").read()
    cl = b"Content-Length: %d\r\n" % len(body)
    P = lambda extra, **kw: predict_head(a.key, extra, **kw)
    # the control: a well-formed request is answered 200 once
    buf = exchange(a.port, P(cl + b"Connection: close\r\n\r\n") + body)
    check([s for s, _ in answers(buf)] == [200], f"a well-formed predict: {buf[:120]!r}")
    cases = [
        ("two different Content-Length", P(cl + b"Content-Length: 5\r\n\r\n") + body, 400, "invalid_http"),
        ("Content-Length twice, other order", P(b"Content-Length: 5\r\n" + cl + b"\r\n") + body, 400, "invalid_http"),
        ("HTTP/1.1 POST without Host", P(cl + b"\r\n", host=False) + body, 400, "invalid_http"),
        ("HTTP/1.1 GET without Host", b"GET /healthz HTTP/1.1\r\n\r\n", 400, "invalid_http"),
        ("Transfer-Encoding: gzip", P(b"Transfer-Encoding: gzip\r\n\r\n") + body, 501, "not_implemented"),
        ("Transfer-Encoding: gzip, chunked",
         P(b"Transfer-Encoding: gzip, chunked\r\n\r\n") + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
         501, "not_implemented"),
        ("Transfer-Encoding twice", P(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n") +
         b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n", 501, "not_implemented"),
        ("Transfer-Encoding and Content-Length",
         P(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n") + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
         400, "invalid_http"),
    ]
    for what, data, st, code in cases:
        one_json_error(exchange(a.port, data), st, code, what)
    # HTTP/1.0 needs no Host; chunked alone is fine
    buf = exchange(a.port, P(cl + b"\r\n", host=False, version=b"HTTP/1.0") + body)
    check([s for s, _ in answers(buf)] == [200], f"HTTP/1.0 without Host: {buf[:120]!r}")
    buf = exchange(a.port, P(b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n") +
                   b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    check([s for s, _ in answers(buf)] == [200], f"a chunked body: {buf[:120]!r}")
    # heads from 7 KiB to 15.9 KiB, one long header or many: 200 up to 8 KiB, then a JSON 431; never silence
    for n in range(7000, 15950, 50):
        for many in (False, True):
            pad = (b"X-P%d: %s\r\n" % (0, b"a" * (n - 60))) if not many else b"".join(
                b"X-P%03d: %s\r\n" % (i, b"b" * 90) for i in range(n // 100))
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad
            buf = exchange(a.port, head + b"\r\n")
            what = f"a {len(head)}-byte head ({'many headers' if many else 'one header'})"
            if len(head) + 2 <= 8000:
                check([s for s, _ in answers(buf)] == [200], f"{what}: {buf[:80]!r}")
            elif len(head) > 8300:
                one_json_error(buf, 431, "header_too_large", what)
            else:
                check(len(answers(buf)) == 1 and answers(buf)[0][0] in (200, 431), f"{what}: {buf[:80]!r}")
    # a long query string counts too
    one_json_error(exchange(a.port, b"GET /healthz?" + b"q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
                   431, "header_too_large", "a 9 KiB query string")
    if FAILED:
        sys.exit(f"{len(FAILED)} checks failed")
    print("ok - malformed HTTP heads answered once, with JSON (400, 431, 501)")


def cmd_trickle(a):
    """A client sending one header line every second is cut at the deadline."""
    # (the cut is counted from before the connect, or before the first request, whose
    # completion starts the server's clock: never after the moment the server starts it)
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", a.port), timeout=a.limit)
    if a.after_request:  # one prediction and its whole answer first, on the same connection
        body = open(a.body, "rb").read()
        s.sendall(predict_head(a.key, b"Content-Length: %d\r\n\r\n" % len(body)) + body)
        buf = b""
        while b"\r\n\r\n" not in buf or not buf.rstrip().endswith(b"}"):
            got = s.recv(65536)
            check(got, "the kept-alive connection closed before its first answer")
            if not got:
                sys.exit(1)
            buf += got
        check(buf.startswith(b"HTTP/1.1 200") and b"connection: close" not in buf.lower(), f"not kept alive: {buf[:300]!r}")
    closed_at = trickle_head(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", a.every, a.limit, t0=t0)
    s.close()
    check(closed_at is not None, f"a client trickling its head still connected after {a.limit} s")
    if closed_at is not None:
        check(closed_at >= a.deadline - 0.5, f"cut at {closed_at:.1f} s, before the {a.deadline} s deadline")
    if FAILED:
        sys.exit(1)
    print(f"ok - a client trickling its {'second ' if a.after_request else ''}head was cut after {closed_at:.1f} s"
          f" (deadline {a.deadline} s)")


def cmd_json(a):
    body = json.loads(open(a.body).read())
    inst = body["instances"][0]
    num = next(k for k, v in inst.items() if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 9)
    text = json.dumps(body).encode()
    val = b'"%s": %d' % (num.encode(), inst[num])
    assert val in text
    bad = {
        "a leading zero": text.replace(val, b'"%s": 0%d' % (num.encode(), inst[num])),
        "a trailing dot": text.replace(val, b'"%s": %d.' % (num.encode(), inst[num])),
        "a raw control byte between tokens": text.replace(val, b'"%s":\x01%d' % (num.encode(), inst[num])),
        "a raw control byte before the body": b"\x0b" + text,
        "a raw DEL byte after the body": text + b"\x7f",
        "a plus sign": text.replace(val, b'"%s": +%d' % (num.encode(), inst[num])),
        "a lone surrogate in a name": text.replace(b'{"', b'{"\\ud800', 1),
        "invalid UTF-8 in a name": text.replace(b'{"', b'{"\xc3(', 1),
    }
    fails = 0
    for what, data in bad.items():
        buf = exchange(a.port, predict_head(a.key, b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data)) + data)
        one_json_error(buf, 400, "invalid_json", what)
    # an unknown field name whose echo is cut inside a UTF-8 sequence, at any offset
    for pre in range(0, 4):
        name = "x" * pre + "\u00e9\u4e2d\U0001f600" * 12
        for where in ("instance", "top"):
            doc = {"instances": [dict(inst, **{name: 1})]} if where == "instance" else dict(body, **{name: 1})
            data = json.dumps(doc, ensure_ascii=False).encode()
            buf = exchange(a.port, predict_head(a.key, b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data)) + data)
            one_json_error(buf, 400, "unknown_field", f"an unknown {len(name.encode())}-byte name ({where}, offset {pre})")
    # a path with raw bytes is echoed in the 404
    buf = exchange(a.port, b"GET /nosuch\xe2\x82/\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    one_json_error(buf, 404, "not_found", "a path with raw bytes")
    if FAILED:
        sys.exit(f"{len(FAILED)} checks failed")
    print("ok - invalid JSON refused (leading zero, trailing dot, control bytes, bad UTF-8); error bodies valid UTF-8 JSON")


def cmd_full(a):
    """--max-per-ip 2: two connections busy with their bodies (not evictable); a third
    from the address gets a JSON 503; once they end, the address is served again."""
    body = open(a.body, "rb").read()
    busy = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        s.sendall(predict_head(a.key, b"Content-Length: %d\r\n\r\n" % len(body)) + body[:10])
        busy.append(s)
    time.sleep(0.5)  # their heads are read: they are in their bodies
    buf = exchange(a.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    one_json_error(buf, 503, "too_many_connections", "a third connection while two are busy")
    for s in busy:
        s.sendall(body[10:])
        got = s.recv(65536)
        check(got.startswith(b"HTTP/1.1 200"), f"a busy connection's answer: {got[:80]!r}")
        s.close()
    time.sleep(0.3)
    buf = exchange(a.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    check([st for st, _ in answers(buf)] == [200], f"served again after the busy ones: {buf[:80]!r}")
    if FAILED:
        sys.exit(1)
    print("ok - a full address with no waiting connection: 503 too_many_connections (JSON), then served again")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("http", "json", "full"):
        p = sub.add_parser(name)
        p.add_argument("port", type=int)
        p.add_argument("--key", required=True)
        p.add_argument("--body", required=True)
    p = sub.add_parser("trickle")
    p.add_argument("port", type=int)
    p.add_argument("--every", type=float, default=1.0)
    p.add_argument("--deadline", type=float, required=True)
    p.add_argument("--limit", type=float, default=30)
    p.add_argument("--after-request", action="store_true")
    p.add_argument("--key")
    p.add_argument("--body")
    a = ap.parse_args()
    {"http": cmd_http, "json": cmd_json, "trickle": cmd_trickle, "full": cmd_full}[a.cmd](a)


if __name__ == "__main__":
    main()
