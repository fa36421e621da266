#!/usr/bin/python3
"""serve_client.py: the HTTP side of the server's integration tests, a real client
(http.client, and raw sockets for what http.client will not send) against a running
`prognos serve`. Subcommands:
  routes    every route and error path, the hostile-input corpus, slow clients
  encounter predictions by encounter id equal the ones by value; no plaintext echoed
  load      keep-alive load from several threads; writes every answer's status and version
  feed      send feature rows (optionally shifted) as predictions, for drift tests
  predict   a few valid predictions (counted, for the audit tests)
Every check raises on failure (exit 1) with what differed."""
import argparse
import http.client
import json
import math
import os
import random
import re
import select
import socket
import sys
import threading
import time

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)


def done(name):
    if FAILS:
        print(f"{name}: {len(FAILS)} checks failed", file=sys.stderr)
        sys.exit(1)
    print(f"ok - {name}")


class _OneWrite(http.client.HTTPConnection):
    """Sends a request's head and a bytes body in one write (http.client sends them in
    two): a client descheduled between the two on a loaded machine would get the
    server's honest 408 at its request deadline, which is not what the checks mean."""

    def _send_output(self, message_body=None, encode_chunked=False):
        if not isinstance(message_body, (bytes, bytearray)):
            return super()._send_output(message_body, encode_chunked)
        self._buffer.extend((b"", b""))
        msg = b"\r\n".join(self._buffer) + bytes(message_body)
        del self._buffer[:]
        self.send(msg)


class Client:
    def __init__(self, url, key=None, timeout=20):
        m = re.match(r"http://([^:/]+):(\d+)", url)
        self.host, self.port = m.group(1), int(m.group(2))
        self.key = key
        self.timeout = timeout
        self.conn = None

    def req(self, method, path, body=None, key="default", headers=None, ctype="application/json"):
        """Returns (status, headers dict (lower-case), body bytes). Reconnects when the
        server closed the connection (it does after an early error answer)."""
        h = {}
        k = self.key if key == "default" else key
        if k:
            h["Authorization"] = "Bearer " + k
        if body is not None:
            if not isinstance(body, (bytes, bytearray)):
                body = json.dumps(body).encode()
            if ctype:
                h["Content-Type"] = ctype
        if headers:
            h.update(headers)
        for attempt in range(2):
            if self.conn is None:
                self.conn = _OneWrite(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, hdrs, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def json(self, method, path, body=None, **kw):
        st, h, data = self.req(method, path, body, **kw)
        try:
            return st, h, json.loads(data)
        except ValueError:
            return st, h, {"_raw": data[:200]}


def is_error(st, doc, code=None, field=None):
    """The error contract: a 4xx/5xx status and {"error":{"code","message","field"?},"request_id"}."""
    ok = 400 <= st < 600 and isinstance(doc.get("error"), dict) and isinstance(doc["error"].get("code"), str) \
        and isinstance(doc["error"].get("message"), str) and re.fullmatch(r"[0-9a-f]{32}", doc.get("request_id", ""))
    if code is not None:
        ok = ok and doc["error"]["code"] == code
    if field is not None:
        ok = ok and doc["error"].get("field") == field
    return bool(ok)


def expect_error(c, method, path, body, st_want, code, field=None, what="", **kw):
    st, h, doc = c.json(method, path, body, **kw)
    check(st == st_want and is_error(st, doc, code, field),
          f"{what or path}: got {st} {doc}, expected {st_want} {code} {field or ''}")
    check(h.get("content-type", "").startswith("application/json"), f"{what}: content-type {h.get('content-type')}")
    return doc


def schema(url, key, model="readmission"):
    st, _, doc = Client(url, key).json("GET", f"/v1/models/{model}")
    if st != 200:
        raise SystemExit(f"cannot read the schema of {model}: {st} {doc}")
    return doc["serving"]["schema"]["features"], doc["serving"]["version"]


def instances_from_rows(rows, feats):
    out = []
    for r in rows:
        inst = {}
        for f in feats:
            v = r.get(f["name"])
            if isinstance(v, bool):
                v = int(v)
            inst[f["name"]] = v
        out.append(inst)
    return out


def raw_exchange(port, data, read_timeout=5, pause=None, times=None):
    """Sends bytes (a list of chunks with pauses between, or one blob) and returns what
    the server answered before closing or the timeout (b'' when it just closed). Stops
    sending once an answer is there, as an HTTP client reading early answers does (a
    server that answered and closed would reset a connection still sending, and the
    answer waiting in the client's buffer would be lost). `times`, a list, gets the
    monotonic time at which each chunk was sent in full."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        chunks = data if isinstance(data, list) else [data]
        for i, ch in enumerate(chunks):
            if i and pause:
                time.sleep(pause)
            if select.select([s], [], [], 0)[0]:
                break  # answered (or closed) already
            try:
                s.sendall(ch)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                break
            if times is not None:
                times.append(time.monotonic())
        buf = b""
        while True:
            try:
                got = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not got:
                break
            buf += got
            if b"\r\n\r\n" in buf:
                head, _, body = buf.partition(b"\r\n\r\n")
                m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                if m and len(body) >= int(m.group(1)):
                    break
        return buf
    finally:
        s.close()


def exchange_sent_within(port, chunks, pause, limit, what, read_timeout=10):
    """raw_exchange of chunks whose last byte the client sent within `limit` seconds of
    its first: the precondition of a check on the server's deadlines (a body late but
    under the cut, a large body read to its end). When the client itself was starved
    (a loaded machine descheduled it past `limit`), the server rightly cut it, and the
    exchange is made again (up to 8 times): the verdict is then on the server's answer
    to the input the check means, not on the machine's load."""
    for attempt in range(8):
        times = []
        t0 = time.monotonic()
        buf = raw_exchange(port, chunks, read_timeout=read_timeout, pause=pause, times=times)
        sent_all = len(times) == len(chunks)
        if not sent_all and buf:
            return buf  # answered before the end: judged by the caller
        if sent_all and times[-1] - t0 <= limit:
            return buf
        print(f"# {what}: the client had not sent its last byte {time.monotonic() - t0 if not sent_all else times[-1] - t0:.2f} s "
              f"after its first, over the {limit:.2f} s the check needs (a starved client): made again")
    check(False, f"{what}: in 8 attempts the client never sent its request within {limit:.2f} s")


def trickle_head(s, head, every, limit, t0=None):
    """Sends head (a request line and headers, never the blank line) on socket s,
    then one more header line every `every` seconds for up to `limit` seconds; returns
    the seconds after which the peer closed (or reset) the connection, or None.
    Counted from t0 (time.monotonic()) when given: take it before the moment the peer
    starts its own deadline (before the connect, before the request whose completion
    starts it), so that a client descheduled in between never sees the cut as early."""
    t0 = time.monotonic() if t0 is None else t0
    s.sendall(head)
    s.settimeout(every)
    n = 0
    while time.monotonic() - t0 < limit:
        try:
            if not s.recv(4096):
                return time.monotonic() - t0
        except socket.timeout:
            n += 1
            try:
                s.sendall(b"X-Slow-%d: x\r\n" % n)
            except OSError:
                return time.monotonic() - t0
        except OSError:  # ssl.SSLError included
            return time.monotonic() - t0
    return None


def parse_raw(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    st = int(m.group(1)) if m else 0
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    return st, doc


# ---- routes -----------------------------------------------------------------------

def cmd_routes(a):
    rows = json.load(open(a.rows))
    feats, version = schema(a.url, a.read)
    used = [f for f in feats if f["used"]]
    good = instances_from_rows(rows[:5], feats)
    P = Client(a.url, a.predict)
    R = Client(a.url, a.read)
    A = Client(a.url, a.admin)
    N = Client(a.url, None)
    pp = "/v1/models/readmission/predict"

    # health, readiness, openapi: no key
    st, h, doc = N.json("GET", "/healthz")
    check(st == 200 and doc.get("status") == "ok", f"healthz {st} {doc}")
    st, h, body = N.req("HEAD", "/healthz")
    check(st == 200 and body == b"", f"HEAD healthz {st} {body[:50]}")
    st, h, doc = N.json("GET", "/readyz")
    check(st == 200 and doc.get("status") == "ready" and doc["models"][0]["version"] == version, f"readyz {st} {doc}")
    st, h, api = N.json("GET", "/openapi.json")
    check(st == 200 and api.get("openapi", "").startswith("3."), f"openapi {st}")
    routes = {("post", "/v1/models/{model}/predict"), ("get", "/v1/models"), ("get", "/v1/models/{model}"),
              ("get", "/v1/kpi"), ("get", "/v1/drift"), ("get", "/v1/alerts"), ("post", "/v1/admin/reload"),
              ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/openapi.json"),
              ("get", "/v1/models/{model}/card"), ("get", "/v2/health/live"), ("get", "/v2/health/ready"), ("get", "/v2"),
              ("get", "/v2/models/{model}"), ("get", "/v2/models/{model}/versions/{version}"),
              ("get", "/v2/models/{model}/ready"), ("get", "/v2/models/{model}/versions/{version}/ready"),
              ("post", "/v2/models/{model}/infer"), ("post", "/v2/models/{model}/versions/{version}/infer"),
              ("get", "/cds-services"), ("post", "/cds-services/{id}"), ("post", "/cds-services/{id}/feedback")}
    described = {(m, p) for p, ops in api.get("paths", {}).items() for m in ops}
    check(described == routes, f"openapi paths differ from the routes: {described ^ routes}")
    for p, ops in api.get("paths", {}).items():
        for m, op in ops.items():
            check("responses" in op and op.get("summary"), f"openapi {m} {p} lacks summary or responses")

    # authentication and roles
    for path in ["/v1/models", "/v1/models/readmission", "/v1/kpi", "/v1/drift", "/v1/alerts", "/metrics"]:
        expect_error(N, "GET", path, None, 401, "unauthorized", what=f"{path} without a key")
        expect_error(P, "GET", path, None, 403, "forbidden", what=f"{path} with a predict key")
    st, h, doc = N.json("POST", pp, {"instances": good})
    check(st == 401 and is_error(st, doc, "unauthorized") and h.get("www-authenticate") == "Bearer",
          f"predict without a key {st} {h}")
    expect_error(R, "POST", pp, {"instances": good}, 403, "forbidden", what="predict with a read key")
    expect_error(N, "POST", pp, {"instances": good}, 401, "unauthorized", what="a malformed key",
                 key="pxk_nonsense")
    bad = a.predict[:-3] + ("AAA" if not a.predict.endswith("AAA") else "BBB")
    expect_error(N, "POST", pp, {"instances": good}, 401, "unauthorized", what="a wrong secret", key=bad)
    expect_error(N, "POST", pp, {"instances": good}, 401, "unauthorized", what="Basic auth",
                 key=None, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    st, h, doc = N.json("POST", pp, {"instances": good}, key=None, headers={"X-API-Key": a.predict})
    check(st == 200, f"X-API-Key header: {st} {doc}")
    expect_error(R, "POST", "/v1/admin/reload", b"", 403, "forbidden", what="reload with a read key")
    st, h, doc = A.json("POST", "/v1/admin/reload", b"")
    check(st == 202 and doc.get("status") == "reload requested", f"reload {st} {doc}")
    st, h, doc = A.json("GET", "/v1/models")
    check(st == 200, f"an admin key reads: {st}")
    st, h, doc = A.json("POST", pp, {"instances": good})
    check(st == 200, f"an admin key predicts: {st}")

    # unknown routes and methods
    expect_error(R, "GET", "/v2/nothing", None, 404, "not_found")
    expect_error(R, "GET", "/v1/models/readmission/explain", None, 404, "not_found")
    expect_error(R, "GET", "/", None, 404, "not_found")
    st, h, doc = P.json("GET", pp)
    check(st == 405 and is_error(st, doc, "method_not_allowed") and h.get("allow") == "POST", f"GET predict {st} {h}")
    expect_error(R, "DELETE", "/v1/models", None, 405, "method_not_allowed")
    expect_error(R, "POST", "/healthz", b"{}", 405, "method_not_allowed")

    # the read routes
    st, h, doc = R.json("GET", "/v1/models")
    m = [x for x in doc.get("models", []) if x["name"] == "readmission"]
    check(st == 200 and m and m[0].get("serving_version") == version and m[0]["aliases"].get("champion") == version,
          f"/v1/models {st} {doc}")
    st, h, doc = R.json("GET", "/v1/models/readmission")
    check(st == 200 and doc["serving"]["version"] == version and len(doc["serving"]["schema"]["features"]) == len(feats),
          f"/v1/models/readmission {st}")
    expect_error(R, "GET", "/v1/models/nosuch", None, 404, "unknown_model")
    st, h, doc = R.json("GET", "/v1/kpi?measure=readmission")
    check((st == 200 and isinstance(doc.get("kpis"), list)) or (st == 404 and is_error(st, doc, "not_available")),
          f"/v1/kpi {st} {doc}")
    expect_error(R, "GET", "/v1/kpi?measure=" + "x" * 200, None, 400, "invalid_value", "measure")
    expect_error(R, "GET", "/v1/kpi?limit=0", None, 400, "invalid_value", "limit")
    st, h, doc = R.json("GET", "/v1/drift")
    check(st == 200 and any(x["model"] == "readmission" and x["version"] == version for x in doc.get("monitors", [])),
          f"/v1/drift {st} {doc}")
    st, h, doc = R.json("GET", "/v1/alerts")
    check(st == 200 and isinstance(doc.get("alerts"), list), f"/v1/alerts {st} {doc}")
    st, h, doc = R.json("GET", "/v1/alerts?model=readmission&open=true")
    check(st == 200 and isinstance(doc.get("alerts"), list), f"/v1/alerts filtered {st} {doc}")
    expect_error(R, "GET", "/v1/alerts?open=maybe", None, 400, "invalid_value", "open")

    # a valid prediction, and what its contributions mean
    st, h, doc = P.json("POST", pp, {"instances": good})
    check(st == 200 and doc.get("model") == "readmission" and doc.get("version") == version
          and re.fullmatch(r"[0-9a-f]{32}", doc.get("request_id", "")) and h.get("x-request-id") == doc["request_id"]
          and h.get("x-model-version") == f"readmission/{version}"
          and len(doc.get("predictions", [])) == len(good), f"predict {st} {doc}")
    for p in doc.get("predictions", []):
        check(0 < p["value"] < 1 and p["band"] in ("low", "medium", "high", "very_high"), f"prediction {p}")
        names = [c["feature"] for c in p["contributions"]]
        check(sorted(names) == sorted(f["name"] for f in used), f"contributions name every used input: {names}")
        mags = [abs(c["value"]) for c in p["contributions"]]
        check(mags == sorted(mags, reverse=True), "contributions largest first")
    check(doc.get("contribution_scale") == "log-odds", "a logistic model's contributions are log-odds")
    # two instances that differ in one input: their log-odds differ by that input's contributions
    num = next(f for f in used if f["kind"] == "numeric" and f["training_max"] - f["training_min"] >= 4)
    i1, i2 = dict(good[0]), dict(good[0])
    i1[num["name"]] = num["training_min"] + 1
    i2[num["name"]] = num["training_min"] + 3
    st, h, doc = P.json("POST", pp, {"instances": [i1, i2]})
    if st == 200:
        p1, p2 = doc["predictions"]
        lo = lambda p: math.log(p / (1 - p))
        c = lambda pr: next(x["value"] for x in pr["contributions"] if x["feature"] == num["name"])
        others = lambda pr: {x["feature"]: x["value"] for x in pr["contributions"] if x["feature"] != num["name"]}
        check(abs((lo(p2["value"]) - lo(p1["value"])) - (c(p2) - c(p1))) < 1e-4,
              f"log-odds difference {lo(p2['value']) - lo(p1['value'])} vs contribution difference {c(p2) - c(p1)}")
        check(others(p1) == others(p2), "the other inputs' contributions do not change")
    else:
        check(False, f"contrast predict {st} {doc}")
    # null = unknown (imputed), beyond the training range = extrapolated
    inst = dict(good[0])
    inst[num["name"]] = None
    st, h, doc = P.json("POST", pp, {"instances": [inst]})
    check(st == 200 and doc["predictions"][0].get("imputed") == [num["name"]], f"null input {st} {doc}")
    inst = dict(good[0])
    inst[num["name"]] = num["training_max"] + (num["accepted_max"] - num["training_max"]) / 2
    st, h, doc = P.json("POST", pp, {"instances": [inst]})
    check(st == 200 and doc["predictions"][0].get("extrapolated") == [num["name"]], f"extrapolated {st} {doc}")
    flag = next((f for f in used if f["kind"] == "flag"), None)
    if flag:
        inst = dict(good[0])
        inst[flag["name"]] = True
        st, h, doc = P.json("POST", pp, {"instances": [inst]})
        check(st == 200, f"a flag as true {st} {doc}")

    # per-field validation: 400 naming the field
    cat = next(f for f in used if f["kind"] == "categorical")
    f0 = "instances[0]."
    for name, value, code in [(num["name"], "12", "wrong_type"), (num["name"], [1], "wrong_type"),
                              (num["name"], {"a": 1}, "wrong_type"), (num["name"], num["accepted_max"] + 1, "out_of_range"),
                              (num["name"], -1e300, "out_of_range"), (num["name"], 1e300, "out_of_range"),
                              (cat["name"], "no_such_level", "unknown_level"), (cat["name"], 3, "wrong_type"),
                              (cat["name"], True, "wrong_type")] + \
                             ([(flag["name"], 2, "out_of_range"), (flag["name"], 0.5, "out_of_range")] if flag else []):
        inst = dict(good[0])
        inst[name] = value
        expect_error(P, "POST", pp, {"instances": [good[1], inst]}, 400, code, "instances[1]." + name,
                     what=f"{name}={value!r}")
    inst = dict(good[0])
    del inst[num["name"]]
    expect_error(P, "POST", pp, {"instances": [inst]}, 400, "missing_field", f0 + num["name"])
    inst = dict(good[0])
    inst["not_an_input"] = 1
    expect_error(P, "POST", pp, {"instances": [inst]}, 400, "unknown_field", f0 + "not_an_input")
    dup = json.dumps({"instances": [good[0]]})[:-3] + f', "{num["name"]}": 1}}]}}'
    expect_error(P, "POST", pp, dup.encode(), 400, "duplicate_field", f0 + num["name"])
    expect_error(P, "POST", pp, {"instances": [good[0]], "extra": 1}, 400, "unknown_field", "extra")
    expect_error(P, "POST", pp, {"rows": [good[0]]}, 400, "unknown_field", "rows")
    expect_error(P, "POST", pp, {}, 400, "missing_field", "instances")
    expect_error(P, "POST", pp, {"instances": good[0]}, 400, "wrong_type", "instances")
    expect_error(P, "POST", pp, {"instances": []}, 400, "invalid_value", "instances")
    expect_error(P, "POST", pp, {"instances": [good[0], 7]}, 400, "wrong_type", "instances[1]")
    expect_error(P, "POST", pp, {"instances": [good[0]] * (a.max_instances + 1)}, 413, "too_many_instances",
                 "instances")
    st, h, doc = P.json("POST", pp, {"instances": [good[0]] * a.max_instances})
    check(st == 200 and len(doc["predictions"]) == a.max_instances, f"a full batch {st}")
    expect_error(P, "POST", "/v1/models/nosuch/predict", {"instances": good}, 404, "unknown_model")
    expect_error(P, "POST", pp, b"{}", 415, "unsupported_media_type", ctype="text/plain")
    expect_error(P, "POST", pp, b"{}", 415, "unsupported_media_type", ctype=None)

    # hostile input: truncated JSON at many points, deep nesting, huge numbers, junk
    text = json.dumps({"instances": good[:2]}).encode()
    for cut in sorted(set([1, 2, 5, 13, 14, 15, len(text) // 3, len(text) // 2, len(text) - 2, len(text) - 1])):
        expect_error(P, "POST", pp, text[:cut], 400, "invalid_json", what=f"JSON cut at {cut}")
    for body, code in [(b"[" * 100000, "too_deep"), (b"{\"instances\":[" + b"[" * 50 + b"]" * 50 + b"]}", "too_deep"),
                       (b"{\"instances\":[{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{}}}}}}}]}", "too_deep"),
                       (b"", "invalid_json"), (b"   ", "invalid_json"), (b"nul", "invalid_json"),
                       (b"{\"instances\":[NaN]}", "invalid_json"), (b"{\"instances\":[{}]} trailing", "invalid_json"),
                       (b"{'instances':[]}", "invalid_json"), (b"\xff\xfe{\x00}", "invalid_json"),
                       (b"{\"instances\":\"\x00\"}", "invalid_json"), (b"{\"instances\":[{\"a\":\"ed\\u0000x\"}]}", "invalid_json"),
                       (b"[]", "invalid_request"), (b"\"instances\"", "invalid_request"), (b"42", "invalid_request"),
                       (b"null", "invalid_request")]:
        expect_error(P, "POST", pp, body, 400, code, what=f"hostile body {body[:30]!r}")
    for lit in [b"1e999", b"-1e999", b"123456789012345678901234567890", b"1" * 400]:
        body = json.dumps({"instances": [good[0]]}).encode().replace(
            f'"{num["name"]}": {json.dumps(good[0][num["name"]])}'.encode(), f'"{num["name"]}": '.encode() + lit)
        st, h, doc = P.json("POST", pp, body)
        check(st == 400 and is_error(st, doc) and doc["error"]["code"] in ("invalid_value", "out_of_range")
              and doc["error"].get("field") == f0 + num["name"], f"huge number {lit[:20]}: {st} {doc}")
    long_name = {"instances": [dict(good[0], **{"x" * 5000: 1})]}
    doc = expect_error(P, "POST", pp, long_name, 400, "unknown_field", what="a 5000-byte field name")
    check(len(json.dumps(doc)) < 1000, "an error does not echo a huge field name")

    # oversize bodies: declared (answered before the body is read) and chunked
    big = b"{\"instances\":[" + b"0," * (a.max_body // 2 + 10) + b"0]}"
    st, h, doc = Client(a.url, a.predict).json("POST", pp, big)
    check(st == 413 and is_error(st, doc, "body_too_large"), f"oversize body {st} {doc}")

    # (read and discarded to its end, then answered: sent within the cut at twice the deadline)
    chead = (f"POST {pp} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.predict}\r\n"
             f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    parts = [chead] + [b"%x\r\n" % len(big[i:i + 65536]) + big[i:i + 65536] + b"\r\n"
                       for i in range(0, len(big), 65536)] + [b"0\r\n\r\n"]
    buf = exchange_sent_within(P.port, parts, None, 1.9 * a.request_timeout_ms / 1000.0, "chunked oversize")
    st, doc = parse_raw(buf)
    check(st == 413 and is_error(st, doc, "body_too_large"), f"chunked oversize {st} {buf[:200]!r}")

    # slow clients: a body that trickles past the request deadline gets 408 (JSON);
    # a stalled connection is closed at the idle timeout while others are served
    head = (f"POST {pp} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.predict}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(text)}\r\n\r\n").encode()
    # (its last byte past the deadline, 1.4 times it, and before the cut at twice it)
    buf = exchange_sent_within(P.port, [head + text[:10], text[10:20], text[20:]], a.request_timeout_ms / 1000.0 * 0.7,
                               1.9 * a.request_timeout_ms / 1000.0, "trickled body")
    st, doc = parse_raw(buf)
    check(st == 408 and is_error(st, doc, "request_timeout"), f"trickled body: {st} {buf[:200]}")
    def still_open(s):  # nothing to read yet, not closed: the server still holds it
        t = s.gettimeout()
        s.setblocking(False)   # (with a timeout set, recv would first wait for data)
        try:
            s.recv(1, socket.MSG_PEEK)
            return False       # an answer (408) or the end: the server let it go
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            s.settimeout(t)
    # A server held up by the stalled connections would answer only once it had closed
    # them (at their deadline, counted from their accept): the first answer comes while
    # every one of them is still open. That is a verdict only when the client looked
    # before the first deadline could have passed (counted from before the first
    # connect); a client descheduled past it on a loaded machine makes the round again
    # (up to 8 times), so the verdict is on the server, not on the machine's load.
    first = min(a.request_timeout_ms / 1000.0, a.idle_timeout)
    stalled = []
    for attempt in range(8):
        for s in stalled:  # (a round made again: the last one's connections go)
            s.close()
        t_stall = time.monotonic()
        stalled = []
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", P.port), timeout=30)
            s.sendall(head + text[:10])
            stalled.append(s)
        s2 = socket.create_connection(("127.0.0.1", P.port), timeout=30)
        s2.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # a header that never ends
        stalled.append(s2)
        st, h, doc = P.json("POST", pp, {"instances": good[:1]})
        check(st == 200, f"served while others stall: {st}")
        opened = [still_open(s) for s in stalled]
        looked = time.monotonic() - t_stall
        if looked < first:
            break
        print(f"# stalled connections: the client looked {looked:.2f} s after its first connect, past the "
              f"{first:.2f} s deadline (a starved client): made again")
    else:
        check(False, f"in 8 rounds the client never looked at the stalled connections within {first:.2f} s")
    check(all(opened), f"the first request was answered only after stalled connections were closed "
                       f"({looked:.2f} s after the first connect)")
    for i in range(19):  # served meanwhile, without waiting for the stalled ones
        st, h, doc = P.json("POST", pp, {"instances": good[:1]})
        check(st == 200, f"served while others stall: {st}")
    for s in stalled:
        # closed by the server (at the request deadline: each is inside its head or body),
        # not before; the bound only catches a connection held for good (far above any
        # delay a loaded machine makes)
        s.settimeout(a.idle_timeout + 120)
        try:
            got = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            got = None
        after = time.monotonic() - t_stall
        check(got is not None and after >= first - 0.5,
              f"a stalled connection was closed (after {after:.1f} s, not before {first:.1f} s, got {got!r:.80})")
        s.close()

    # a connection flood from one address: beyond the per-IP limit new ones are refused,
    # and the server answers normally afterwards
    # (counted by the server's own counters, read until they show it: no pause whose
    # length would decide the verdict on a slow machine)
    def limited():  # connections refused or evicted for the limits so far
        # (read from another loopback address: 127.0.0.1's connections are the flood's)
        c = http.client.HTTPConnection(P.host, P.port, timeout=20, source_address=("127.0.0.2", 0))
        c.request("GET", "/metrics", headers={"Authorization": "Bearer " + a.read, "Connection": "close"})
        body = c.getresponse().read()
        c.close()
        n = 0
        for line in body.decode().splitlines():
            f = line.split()
            if len(f) == 2 and f[0] in ("prognos_http_connections_refused_total", "prognos_http_connections_evicted_total"):
                n += int(float(f[1]))
        return n
    before = limited()
    flood = []
    for _ in range(a.max_per_ip + 20):
        try:
            flood.append(socket.create_connection(("127.0.0.1", P.port), timeout=5))
        except OSError:
            break
    give_up = time.time() + 120   # only catches a server that never applies the limit
    while limited() - before < 10 and time.time() < give_up:
        time.sleep(0.1)
    check(limited() - before >= 10,
          f"the per-IP connection limit refused or evicted {limited() - before} of {len(flood)} connections")
    for s in flood:
        s.close()
    # served again once the flood is gone (a new connection, retried while the server
    # is still closing the flood's)
    give_up = time.time() + 120
    while True:
        st, h, doc = Client(a.url, a.predict).json("POST", pp, {"instances": good[:1]})
        if st == 200 or time.time() > give_up:
            break
        time.sleep(0.1)
    check(st == 200, f"served after the flood: {st}")

    # garbage on the wire: the server survives and answers the next client
    for junk in [b"\x00\x01\x02\x03\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST " + b"/a" * 40000 + b" HTTP/1.1\r\n\r\n",
                 b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 100000 + b"\r\n\r\n"]:
        raw_exchange(P.port, junk, read_timeout=3)
    st, h, doc = N.json("GET", "/healthz")
    check(st == 200, f"alive after garbage: {st}")

    # metrics: Prometheus text, with the counters the tests just moved
    st, h, body = R.req("GET", "/metrics")
    text = body.decode()
    check(st == 200 and h.get("content-type", "").startswith("text/plain"), f"/metrics {st} {h}")
    for line in text.splitlines():
        if line.startswith("#"):
            check(re.match(r"# (HELP|TYPE) [a-z_]+ ", line) is not None, f"metrics comment: {line}")
        else:
            check(re.fullmatch(r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+\-]+|[a-z_]+\{le="\+Inf"\} \d+',
                               line) is not None, f"metrics line: {line}")
    for name in ["prognos_http_requests_total{route=\"predict\",status=\"200\"}", "prognos_predict_latency_seconds_count",
                 "prognos_audit_queue_depth", "prognos_model_version{model=\"readmission\"} %d" % version,
                 "prognos_http_requests_total{route=\"predict\",status=\"400\"}", "prognos_predictions_total{"]:
        check(name in text, f"metrics lack {name}")
    done("routes")


# ---- encounter ids ------------------------------------------------------------------

def cmd_encounter(a):
    pairs = json.load(open(a.pairs))  # [{"id": plaintext, "row": {...features...}}]
    feats, version = schema(a.url, a.read)
    P = Client(a.url, a.predict)
    pp = "/v1/models/readmission/predict"
    ids = [p["id"] for p in pairs]
    st, h, raw = P.req("POST", pp, {"instances": [{"encounter_id": i} for i in ids]})
    doc = json.loads(raw)
    check(st == 200 and len(doc.get("predictions", [])) == len(ids), f"by encounter {st} {doc}")
    for i in ids:
        check(i.encode() not in raw, "the answer does not echo an encounter id")
    st2, h2, doc2 = P.json("POST", pp, {"instances": instances_from_rows([p["row"] for p in pairs], feats)})
    check(st2 == 200, f"by value {st2} {doc2}")
    if st == 200 and st2 == 200:
        for pe, pv in zip(doc["predictions"], doc2["predictions"]):
            check(pe.get("source") == "encounter" and abs(pe["value"] - pv["value"]) < 1e-9
                  and pe["contributions"] == pv["contributions"], f"encounter vs values: {pe} {pv}")
    # mixed batch, an unknown encounter, malformed ids
    st, h, doc = P.json("POST", pp, {"instances": [instances_from_rows([pairs[0]["row"]], feats)[0],
                                                   {"encounter_id": ids[1]}]})
    check(st == 200 and "source" not in doc["predictions"][0] and doc["predictions"][1]["source"] == "encounter",
          f"mixed batch {st} {doc}")
    st, h, raw = P.req("POST", pp, {"instances": [{"encounter_id": ids[0]}, {"encounter_id": a.unknown}]})
    doc = json.loads(raw)
    check(st == 404 and is_error(st, doc, "encounter_not_found", "instances[1].encounter_id")
          and a.unknown.encode() not in raw, f"unknown encounter {st} {doc}")
    for inst, code in [({"encounter_id": 12345}, "wrong_type"), ({"encounter_id": ""}, "invalid_value"),
                       ({"encounter_id": "x" * 65}, "invalid_value"), ({"encounter_id": "a\nb"}, "invalid_value"),
                       ({"encounter_id": ids[0], feats[0]["name"]: 1}, "invalid_request")]:
        expect_error(P, "POST", pp, {"instances": [inst]}, 400, code, "instances[0].encounter_id", what=f"{inst}"[:60])
    done("encounter")


# ---- load and feeds -----------------------------------------------------------------

def cmd_load(a):
    rows = json.load(open(a.rows))
    feats, _ = schema(a.url, a.read)
    insts = instances_from_rows(rows[:200], feats)
    stop = time.time() + a.seconds
    log = []
    lock = threading.Lock()
    stop_file = a.stop_file

    def worker(seed):
        rnd = random.Random(seed)
        c = Client(a.url, a.predict, timeout=30)
        mine = []
        while time.time() < stop and not (stop_file and os.path.exists(stop_file)):
            t0 = time.time()
            try:
                st, h, doc = c.json("POST", "/v1/models/readmission/predict",
                                    {"instances": rnd.sample(insts, a.batch)})
                v = doc.get("version", 0)
            except Exception as ex:  # a dropped connection is a failed request
                st, v = 0, 0
                c = Client(a.url, a.predict, timeout=10)
                print("request failed:", repr(ex), file=sys.stderr)
            mine.append((t0, time.time(), st, v))
        with lock:
            log.extend(mine)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(a.threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log.sort()
    with open(a.out, "w") as f:
        for t0, t1, st, v in log:
            f.write(f"{t0:.6f} {t1:.6f} {st} {v}\n")
    print(f"load: {len(log)} requests, {sum(1 for x in log if x[2] != 200)} failed")


def cmd_feed(a):
    """Sends rows as predictions in batches. --shift NAME:DELTA adds DELTA to a numeric
    input (kept inside its accepted range), --set NAME:VALUE:SHARE sets an input to
    VALUE in a share of the rows."""
    rows = json.load(open(a.rows))
    feats, _ = schema(a.url, a.read)
    byname = {f["name"]: f for f in feats}
    rnd = random.Random(a.seed)
    insts = instances_from_rows(rows, feats)
    rnd.shuffle(insts)
    insts = (insts * (a.n // max(1, len(insts)) + 1))[:a.n]
    for spec in a.shift or []:
        name, delta = spec.split(":")
        f = byname[name]
        for inst in insts:
            if inst[name] is not None:
                inst[name] = min(f["accepted_max"], max(f["accepted_min"], inst[name] + float(delta)))
    for spec in a.set or []:
        name, value, share = spec.split(":")
        for inst in insts:
            if rnd.random() < float(share):
                inst[name] = json.loads(value)
    c = Client(a.url, a.predict)
    sent = 0
    for i in range(0, len(insts), a.batch):
        st, h, doc = c.json("POST", "/v1/models/readmission/predict", {"instances": insts[i:i + a.batch]})
        if st != 200:
            raise SystemExit(f"feed: {st} {doc}")
        sent += len(insts[i:i + a.batch])
    print(f"feed: {sent} instances sent")


def cmd_predict(a):
    rows = json.load(open(a.rows))
    feats, _ = schema(a.url, a.read)
    c = Client(a.url, a.predict)
    ok = 0
    ids = []
    answers = []
    for i in range(a.n):
        st, h, doc = c.json("POST", "/v1/models/readmission/predict",
                            {"instances": instances_from_rows(rows[i % len(rows):i % len(rows) + 1], feats)})
        if st == 200:
            ok += 1
            ids.append(doc["request_id"])
            answers.append(json.dumps({k: v for k, v in doc.items() if k != "request_id"}, sort_keys=True))
        elif a.expect_200:
            raise SystemExit(f"predict: {st} {doc}")
        else:
            print(f"predict: {st} {doc.get('error', {}).get('code')}")
    if a.ids:
        with open(a.ids, "a") as f:
            f.write("".join(i + "\n" for i in ids))
    if a.answers:  # the answers without their request ids, one JSON line each
        with open(a.answers, "w") as f:
            f.write("".join(x + "\n" for x in answers))
    print(ok)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ["routes", "encounter", "load", "feed", "predict"]:
        p = sub.add_parser(name)
        p.add_argument("url")
        p.add_argument("--read")
        p.add_argument("--predict")
        p.add_argument("--admin")
        p.add_argument("--rows")
        p.add_argument("--pairs")
        p.add_argument("--unknown", default="NO-SUCH-ENCOUNTER")
        p.add_argument("--max-instances", type=int, default=1000)
        p.add_argument("--max-body", type=int, default=1 << 20)
        p.add_argument("--max-per-ip", type=int, default=128)
        p.add_argument("--request-timeout-ms", type=int, default=10000)
        p.add_argument("--idle-timeout", type=int, default=10)
        p.add_argument("--seconds", type=float, default=10)
        p.add_argument("--threads", type=int, default=4)
        p.add_argument("--batch", type=int, default=1)
        p.add_argument("--out")
        p.add_argument("--stop-file")
        p.add_argument("--n", type=int, default=1000)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--shift", action="append")
        p.add_argument("--set", action="append")
        p.add_argument("--ids")
        p.add_argument("--answers")
        p.add_argument("--expect-200", action="store_true")
    a = ap.parse_args()
    {"routes": cmd_routes, "encounter": cmd_encounter, "load": cmd_load, "feed": cmd_feed,
     "predict": cmd_predict}[a.cmd](a)


if __name__ == "__main__":
    main()
