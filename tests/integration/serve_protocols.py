#!/usr/bin/env python3
"""serve_protocols.py: the server's protocols against a real client.

  v2       Open Inference Protocol V2: health, metadata, readiness, and infer on
           generated feature rows equal to /v1 predict for the same instances
           (the same value to /v1's six significant digits, band and every
           contribution); the same checks as /v1 (a value out of range, a wrong
           datatype, a missing or unknown input, a bad shape, strict JSON).
  openapi  /openapi.json validates (the OpenAPI 3.0 JSON Schema, python3-jsonschema), every answer the
           server gave in the run validates against its operation's schema, and
           {"encounter_id": "E1"} matches exactly one branch of the instance oneOf.
  cors     preflight and actual requests from an allowed and a foreign origin.
  cds      CDS Hooks: discovery, a card from FHIR resources equal to /v1 predict
           on the stay's feature row, the warehouse fallback, 400/412, feedback.
"""
import json
import os
import re
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_client import Client, check, done, schema, instances_from_rows  # noqa: E402

ANSWERS = []  # (method, path template, status, content-type, body) of every answer, for the openapi check


def call(c, method, path, body=None, template=None, **kw):
    st, h, data = c.req(method, path, body, **kw)
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        doc = None
    ANSWERS.append((method.lower(), template or path, st, h.get("content-type", ""), doc))
    return st, h, doc


def v2_error(st, doc, st_want, code=None, field=None):
    ok = st == st_want and isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"] \
        and re.fullmatch(r"[0-9a-f]{32}", doc.get("request_id", ""))
    if code:
        ok = ok and doc.get("code") == code
    if field:
        ok = ok and doc.get("field") == field
    return bool(ok)


def close6(a, b):
    """b is a printed with six significant digits (/v1's fmt6)."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 5.01e-6 * max(abs(a), 1e-300) or abs(a - b) < 1e-300 or float(f"{a:.6g}") == b


def tensors(insts, feats):
    out = []
    for f in feats:
        if not f["used"]:
            continue
        numeric = f["kind"] != "categorical"
        out.append({"name": f["name"], "datatype": "FP64" if numeric else "BYTES", "shape": [len(insts)],
                    "data": [i[f["name"]] for i in insts]})
    return out


def cmd_v2(a):
    R, P = Client(a.url, a.read), Client(a.url, a.predict)
    N = Client(a.url, None)
    rows = json.load(open(a.rows))
    feats, version = schema(a.url, a.read)
    T = "/v2/models/{model}"
    st, _, doc = call(N, "GET", "/v2/health/live")
    check(st == 200 and doc == {"live": True}, f"live {st} {doc}")
    st, _, doc = call(N, "GET", "/v2/health/ready")
    check(st == 200 and doc == {"ready": True}, f"ready {st} {doc}")
    st, _, doc = call(N, "GET", "/v2")
    check(st == 200 and doc["name"] == "prognos" and doc["extensions"] == [], f"server metadata {st} {doc}")
    st, _, doc = call(N, "GET", "/v2/models/readmission", template=T)
    check(st == 401 and v2_error(st, doc, 401, "unauthorized"), f"metadata without a key {st} {doc}")
    for c in (R, P):  # any valid key
        st, _, meta = call(c, "GET", "/v2/models/readmission", template=T)
        check(st == 200, f"metadata {st} {meta}")
    used = [f["name"] for f in feats if f["used"]]
    check([i["name"] for i in meta["inputs"]] == used, f"metadata inputs {meta['inputs']} vs {used}")
    check(meta["versions"] == [str(version)] and meta["outputs"][0]["name"] == "probability"
          and meta["outputs"][2]["shape"] == [-1, len(feats)], f"metadata outputs {meta}")
    st, _, doc = call(R, "GET", f"/v2/models/readmission/versions/{version}", template=T + "/versions/{version}")
    check(st == 200 and doc == meta, f"versioned metadata {st}")
    st, _, doc = call(R, "GET", "/v2/models/readmission/versions/999", template=T + "/versions/{version}")
    check(v2_error(st, doc, 404, "unknown_version"), f"unknown version {st} {doc}")
    st, _, doc = call(R, "GET", "/v2/models/readmission/ready", template=T + "/ready")
    check(st == 200 and doc == {"name": "readmission", "ready": True}, f"model ready {st} {doc}")
    st, _, doc = call(R, "GET", f"/v2/models/readmission/versions/{version}/ready", template=T + "/versions/{version}/ready")
    check(st == 200 and doc["ready"] is True, f"versioned ready {st} {doc}")
    st, _, doc = call(R, "GET", "/v2/models/nosuch/ready", template=T + "/ready")
    check(v2_error(st, doc, 404, "unknown_model"), f"unknown model ready {st} {doc}")

    # infer equals /v1 on generated rows, in batches of 1..50
    insts = instances_from_rows(rows[: a.n], feats)
    names = [f["name"] for f in feats]
    compared = 0
    i = 0
    size = 1
    while i < len(insts):
        batch = insts[i:i + size]
        i += size
        size = size % 50 + 7
        st1, _, v1 = call(P, "POST", "/v1/models/readmission/predict", {"instances": batch},
                          template="/v1/models/{model}/predict")
        if st1 != 200:  # a row outside the accepted range: V2 must refuse it the same way
            st2, _, v2 = call(P, "POST", "/v2/models/readmission/infer", {"inputs": tensors(batch, feats)},
                              template=T + "/infer")
            check(st2 == st1 and v2.get("code") == v1["error"]["code"], f"refusals differ: {st1} {v1} / {st2} {v2}")
            continue
        tpl = T + "/versions/{version}/infer" if i % 2 else T + "/infer"
        path = f"/v2/models/readmission/versions/{version}/infer" if i % 2 else "/v2/models/readmission/infer"
        st2, h2, v2 = call(P, "POST", path, {"id": f"b{i}", "inputs": tensors(batch, feats)}, template=tpl)
        check(st2 == 200, f"infer {st2} {v2}")
        if st2 != 200:
            continue
        check(v2["model_name"] == "readmission" and v2["model_version"] == str(version) and v2["id"] == f"b{i}",
              f"infer head {v2}")
        out = {o["name"]: o for o in v2["outputs"]}
        check(out["probability"]["shape"] == [len(batch)] and out["contributions"]["shape"] == [len(batch), len(names)],
              f"shapes {[(o['name'], o['shape']) for o in v2['outputs']]}")
        check(v2["parameters"]["feature_names"] == names, "feature_names")
        for r, p1 in enumerate(v1["predictions"]):
            p2 = out["probability"]["data"][r]
            check(close6(p2, p1["value"]), f"value {p2} vs /v1 {p1['value']}")
            check(out["band"]["data"][r] == p1["band"], f"band {out['band']['data'][r]} vs {p1['band']}")
            c2 = out["contributions"]["data"][r * len(names):(r + 1) * len(names)]
            for c in p1["contributions"]:
                check(close6(c2[names.index(c["feature"])], c["value"]),
                      f"contribution {c['feature']}: {c2[names.index(c['feature'])]} vs {c['value']}")
            compared += 1
    check(compared >= a.n // 2, f"only {compared} instances compared")

    # requested outputs, unknowns, and the checks /v1 makes
    one = insts[:1]
    st, _, doc = call(P, "POST", "/v2/models/readmission/infer",
                      {"inputs": tensors(one, feats), "outputs": [{"name": "band"}]}, template=T + "/infer")
    check(st == 200 and [o["name"] for o in doc["outputs"]] == ["band"], f"requested outputs {st} {doc}")

    def bad(body, st_want, code, field=None, raw=False, ctype="application/json"):
        st, _, doc = call(P, "POST", "/v2/models/readmission/infer", body if raw else body, template=T + "/infer",
                          ctype=ctype)
        check(v2_error(st, doc, st_want, code, field), f"{code}: got {st} {doc}")
    t = tensors(one, feats)
    num = next(x for x in t if x["datatype"] == "FP64" and x["name"] == "age_years")
    bad({"inputs": [dict(x, data=[500]) if x is num else x for x in t]}, 400, "out_of_range", "inputs.age_years.data[0]")
    bad({"inputs": [dict(x, datatype="INT64") if x is num else x for x in t]}, 400, "wrong_type", "inputs.age_years")
    bad({"inputs": [x for x in t if x is not num]}, 400, "missing_field", "inputs.age_years")
    bad({"inputs": t + [{"name": "nosuch", "datatype": "FP64", "shape": [1], "data": [1]}]}, 400, "unknown_field")
    bad({"inputs": t + [num]}, 400, "duplicate_field", "inputs.age_years")
    bad({"inputs": [dict(x, shape=[2]) if x is num else x for x in t]}, 400, "invalid_value")
    bad({"inputs": t, "outputs": [{"name": "nosuch"}]}, 400, "unknown_output")
    bad({"inputs": t, "extra": 1}, 400, "unknown_field")
    bad(b'{"inputs": [01]}', 400, "invalid_json", raw=True)
    bad(b'{"inputs": []}', 400, "wrong_type", raw=True)
    bad({"inputs": t}, 415, "unsupported_media_type", ctype="text/plain")
    st, _, doc = call(R, "POST", "/v2/models/readmission/infer", {"inputs": t}, template=T + "/infer")
    check(v2_error(st, doc, 403, "forbidden"), f"infer with a read key {st} {doc}")
    cat = next((x for x in t if x["datatype"] == "BYTES"), None)
    if cat:
        bad({"inputs": [dict(x, data=["nosuch"]) if x is cat else x for x in t]}, 400, "unknown_level")
    nul = {"inputs": [dict(x, data=[None]) if x is num else x for x in t]}
    st, _, doc = call(P, "POST", "/v2/models/readmission/infer", nul, template=T + "/infer")
    st1, _, d1 = call(P, "POST", "/v1/models/readmission/predict", {"instances": [dict(one[0], age_years=None)]},
                      template="/v1/models/{model}/predict")
    check(st == 200 and st1 == 200 and close6(doc["outputs"][0]["data"][0], d1["predictions"][0]["value"]),
          f"null (imputed) as /v1: {st} {doc} / {d1}")
    json.dump(ANSWERS, open(a.answers, "a"))
    open(a.answers, "a").write("\n")
    print(f"v2: {compared} instances compared with /v1")
    done("v2")


def resolve(doc, node, seen=0):
    if isinstance(node, dict) and "$ref" in node:
        path = node["$ref"][2:].split("/")
        x = doc
        for p in path:
            x = x[p]
        return resolve(doc, x, seen + 1)
    return node


def oas_to_jsonschema(node):
    """An OpenAPI 3.0 schema object as a JSON Schema draft 4 one: `nullable: true`
    becomes a type list with "null" (OpenAPI 3.0's only departure that matters here)."""
    if isinstance(node, list):
        return [oas_to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: oas_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        if "type" in out:
            t = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = t + ["null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = out["enum"] + [None]
        for comb in ("oneOf", "anyOf"):
            if comb in out:
                out[comb] = out[comb] + [{"type": "null"}]
    return out


def cmd_openapi(a):
    import os
    from jsonschema import Draft4Validator
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "fixtures", "openapi", "oas-3.0-schema.json")) as f:
        oas = json.load(f)
    st, _, doc = Client(a.url).json("GET", "/openapi.json")
    check(st == 200, f"openapi {st}")
    check(str(doc.get("openapi", "")).startswith("3.0."), f"openapi version {doc.get('openapi')}")
    errs = sorted(Draft4Validator(oas).iter_errors(doc), key=lambda e: list(e.path))
    check(not errs, f"/openapi.json is not a valid OpenAPI 3.0 document: {[(list(e.path), e.message[:200]) for e in errs[:3]]}")
    # every $ref resolves
    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)
    for r in refs(doc):
        check(r.startswith("#/"), f"external $ref {r}")
        try:
            resolve(doc, {"$ref": r})
        except (KeyError, TypeError):
            check(False, f"$ref {r} does not resolve")

    def deref(node, depth=0):  # the document's schemas have no cycles: inlined
        assert depth < 50, "a $ref cycle"
        if isinstance(node, dict):
            if "$ref" in node:
                return deref(resolve(doc, node), depth + 1)
            return {k: deref(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [deref(v, depth + 1) for v in node]
        return node

    def validator(schema):
        return Draft4Validator(oas_to_jsonschema(deref(schema)))
    inst = {"$ref": "#/components/schemas/Instance"}
    branches = resolve(doc, inst)["oneOf"]
    for body, want in [({"encounter_id": "E1"}, 1), ({"age_years": 70, "sex": "F"}, 0)]:
        matches = [i for i, b in enumerate(branches) if validator(b).is_valid(body)]
        check(len(matches) == 1 and matches[0] == want, f"{body} matches instance branches {matches}")
        check(validator(inst).is_valid(body), f"{body} is not a valid Instance")
    # every answer recorded in the run validates against its operation's response schema
    n = 0
    for line in open(a.answers):
        for method, tpl, st, ctype, body in json.loads(line):
            op = doc["paths"].get(tpl, {}).get(method)
            check(op is not None, f"no operation {method} {tpl}")
            if not op:
                continue
            resp = resolve(doc, op["responses"].get(str(st)) or op["responses"].get("default") or {})
            check(resp != {}, f"{method} {tpl}: status {st} is not described")
            sch = resp.get("content", {}).get("application/json", {}).get("schema")
            if sch is None or body is None:
                continue
            errs = list(validator(sch).iter_errors(body))
            check(not errs, f"{method} {tpl} {st}: {errs[:1]} in {json.dumps(body)[:300]}")
            n += 1
    check(n >= a.min_answers, f"only {n} answers validated")
    print(f"openapi: the document validates; {n} answers validate against their schemas")
    done("openapi")


def cmd_cors(a):
    C = Client(a.url, a.read)
    good, foreign = a.origin, "https://evil.example.org"
    if a.no_origins:  # the default: no origin may call from a browser
        st, h, doc = C.json("OPTIONS", "/v1/models", key=None, headers={"Origin": good, "Access-Control-Request-Method": "GET"})
        check(st == 403 and "access-control-allow-origin" not in h and doc["error"]["code"] == "origin_not_allowed",
              f"no origins configured: preflight {st} {h} {doc}")
        st, h, doc = C.json("GET", "/v1/models", headers={"Origin": good})
        check(st == 200 and "access-control-allow-origin" not in h, f"no origins configured: GET {st} {h}")
        done("cors (none allowed)")
        return
    st, h, doc = call(C, "OPTIONS", "/v1/models/readmission/predict", key=None,
                      headers={"Origin": good, "Access-Control-Request-Method": "POST",
                               "Access-Control-Request-Headers": "authorization, content-type"},
                      template="/v1/models/{model}/predict")
    ANSWERS.pop()  # OPTIONS is not an operation of the document
    check(st == 204 and h.get("access-control-allow-origin") == good and h.get("access-control-allow-methods") == "POST"
          and "Authorization" in h.get("access-control-allow-headers", ""), f"preflight {st} {h}")
    st, h, doc = C.json("OPTIONS", "/v1/models/readmission/predict", key=None,
                        headers={"Origin": foreign, "Access-Control-Request-Method": "POST"})
    check(st == 403 and "access-control-allow-origin" not in h, f"foreign preflight {st} {h}")
    st, h, doc = C.json("OPTIONS", "/v1/models/readmission/predict", key=None,
                        headers={"Origin": good, "Access-Control-Request-Method": "DELETE"})
    check(st == 403 and "access-control-allow-methods" not in h, f"preflight of DELETE {st} {h}")
    st, h, doc = C.json("OPTIONS", "/nosuch", key=None, headers={"Origin": good, "Access-Control-Request-Method": "GET"})
    check(st == 404, f"preflight of no route {st}")
    st, h, doc = C.json("GET", "/v1/models", headers={"Origin": good})
    check(st == 200 and h.get("access-control-allow-origin") == good and h.get("vary") == "Origin", f"cors GET {st} {h}")
    st, h, doc = C.json("GET", "/v1/models", headers={"Origin": foreign})
    check(st == 200 and "access-control-allow-origin" not in h, f"foreign GET {st} {h}")
    done("cors")


# ---- CDS Hooks ---------------------------------------------------------------------------

def b64u(b):
    import base64
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def der_to_raw(der, n=48):
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as JWS's r || s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        ln = der[i + 1]
        v = der[i + 2:i + 2 + ln].lstrip(b"\0")
        out += v.rjust(n, b"\0")
        i += 2 + ln
    return out


def make_jwt(key, kid, alg, claims, header_extra=None):
    head = {"alg": alg, "typ": "JWT", "kid": kid}
    head.update(header_extra or {})
    si = b64u(json.dumps(head).encode()) + "." + b64u(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha384", "-sign", key], input=si.encode(), capture_output=True,
                         check=True).stdout
    if alg == "ES384":
        sig = der_to_raw(sig)
    return si + "." + b64u(sig)


class Jwts:
    def __init__(self, a, base):
        self.a, self.base = a, base
        self.n = 0

    def token(self, path, alg="ES384", **over):
        self.n += 1
        now = int(time.time())
        claims = {"iss": "https://ehr.example.org", "sub": "client-1", "aud": self.base + path, "exp": now + 300,
                  "iat": now, "jti": f"{uuid.uuid4()}"}
        claims.update({k: v for k, v in over.items() if not k.startswith("_")})
        for k in [k for k, v in over.items() if v is None]:
            claims.pop(k, None)
        key, kid = (self.a.es_key, "ehr-es") if alg == "ES384" else (self.a.rs_key, "ehr-rs")
        if over.get("_kid"):
            kid = over["_kid"]
        return make_jwt(over.get("_key", key), kid, alg, claims)


def cmd_cds(a):
    base = a.url.rstrip("/")
    J = Jwts(a, base)
    N = Client(a.url, None)
    P = Client(a.url, a.predict)
    R = Client(a.url, a.read)
    st, _, doc = call(N, "GET", "/cds-services")
    check(st == 200, f"discovery {st} {doc}")
    svc = {x["id"]: x for x in doc["services"]}
    check(set(svc) == {"readmission-risk", "stay-outlook"}, f"services {list(svc)}")
    check(svc["readmission-risk"]["hook"] == "encounter-discharge" and svc["stay-outlook"]["hook"] == "patient-view",
          "hooks")
    pf = svc["readmission-risk"]["prefetch"]
    check(set(pf) == {"patient", "encounter", "conditions", "encounters", "procedures"}
          and pf["encounter"] == "Encounter/{{context.encounterId}}" and "date=ge" in pf["encounters"], f"prefetch {pf}")

    stays = [json.loads(l) for l in open(a.stays)]
    TPL = "/cds-services/{id}"

    def hook(sid, stay, prefetch=True, token=None, body=None, alg="ES384"):
        path = f"/cds-services/{sid}"
        b = body or {"hook": svc[sid]["hook"], "hookInstance": str(uuid.uuid4()),
                     "context": {"userId": "Practitioner/p1", "patientId": stay["patient_id"],
                                 "encounterId": stay["encounter_id"]}}
        if prefetch and body is None:
            b["prefetch"] = stay["prefetch"]
        tok = token if token is not None else J.token(path, alg)
        return call(N, "POST", path, b, template=TPL, headers={"Authorization": "Bearer " + tok} if tok else None)

    # authentication: a valid JWT or 401
    s0 = stays[0]
    path0 = "/cds-services/readmission-risk"
    st, h, doc = hook("readmission-risk", s0, token="")
    check(st == 401 and doc["error"]["code"] == "unauthorized" and h.get("www-authenticate") == "Bearer", f"no JWT {st} {doc}")
    st, _, doc = call(P, "POST", path0, {"hook": "encounter-discharge"}, template=TPL)
    check(st == 401, f"an API key where a JWT is needed {st} {doc}")
    refusals = {
        "expired": J.token(path0, exp=int(time.time()) - 120),
        "aud": J.token(path0, aud=base + "/cds-services/stay-outlook"),
        "no jti": J.token(path0, jti=None),
        "no sub": J.token(path0, sub=None),
        "issuer": J.token(path0, iss="https://other.example.org"),
        "far exp": J.token(path0, exp=int(time.time()) + 86400),
        "kid": J.token(path0, _kid="nosuch"),
        "signature": J.token(path0, _key=a.other_key),
    }
    good = J.token(path0)
    refusals["tampered"] = good[:-8] + ("A" if good[-8] != "A" else "B") + good[-7:]
    hd, body, _ = good.split(".")
    refusals["alg none"] = b64u(json.dumps({"alg": "none", "kid": "ehr-es"}).encode()) + "." + body + "."
    refusals["HS384"] = b64u(json.dumps({"alg": "HS384", "kid": "ehr-es"}).encode()) + "." + body + "." + b64u(b"x" * 48)
    for what, tok in refusals.items():
        st, _, doc = hook("readmission-risk", s0, token=tok)
        check(st == 401 and doc["error"]["code"] == "unauthorized", f"JWT with bad {what}: {st} {doc}")
    st, _, doc = hook("readmission-risk", s0, token=good)
    check(st == 200, f"a valid JWT {st} {doc}")
    st, _, doc = hook("readmission-risk", s0, token=good)
    check(st == 401 and "replay" in doc["error"]["message"], f"a replayed jti {st} {doc}")
    st, _, doc = hook("readmission-risk", s0, alg="RS384")
    check(st == 200, f"RS384 {st} {doc}")

    # cards from FHIR resources equal /v1 predict on the stay's feature rows
    compared = {"readmission": 0, "mortality": 0, "los": 0}
    cards = []
    for s in stays:
        for sid in ("readmission-risk", "stay-outlook"):
            want = {m: s["rows"][m] for m in s["rows"]}
            if sid == "readmission-risk" and "readmission" not in want:
                continue
            st, _, doc = hook(sid, s)
            check(st == 200, f"{sid} {s['encounter_id']}: {st} {doc}")
            if st != 200:
                continue
            for c in doc["cards"]:
                x = c["extension"]["prognos"]
                m = x["model"]
                check(len(c["summary"]) < 140 and c["indicator"] == {"very_high": "critical", "high": "warning"}.get(
                    x["band"], "info") and x["source"] == "prefetch", f"card {c}")
                check("[Model card](" in c["detail"] and c["links"][0]["url"].endswith(f"/v1/models/{m}/card")
                      and c["source"]["label"].startswith("Prognos"), f"card detail/links {c}")
                check(re.search(r"\((raises|lowers)\)", c["detail"]) is not None, f"no contribution in {c['detail']}")
                cards.append((sid, c))
                if m not in want:
                    continue
                st1, _, v1 = call(P, "POST", f"/v1/models/{m}/predict", {"instances": [want[m]]},
                                  template="/v1/models/{model}/predict")
                check(st1 == 200, f"/v1 {m} {st1} {v1}")
                if st1 == 200:
                    p1 = v1["predictions"][0]
                    check(close6(x["value"], p1["value"]) and x["band"] == p1["band"],
                          f"{m} {s['encounter_id']}: card {x['value']} {x['band']} vs /v1 {p1['value']} {p1['band']}")
                    compared[m] += 1
            if sid == "stay-outlook":
                check({c["extension"]["prognos"]["model"] for c in doc["cards"]} == {"mortality", "los"},
                      f"stay-outlook cards {doc}")
    check(all(v >= 5 for v in compared.values()), f"compared {compared}")

    # the warehouse fallback: no prefetch, a stay that was loaded
    st, _, doc = hook("readmission-risk", s0, prefetch=False)
    check(st == 200 and doc["cards"][0]["extension"]["prognos"]["source"] == "warehouse", f"warehouse {st} {doc}")
    if st == 200:
        st1, _, v1 = call(P, "POST", "/v1/models/readmission/predict", {"instances": [s0["rows"]["readmission"]]},
                          template="/v1/models/{model}/predict")
        check(close6(doc["cards"][0]["extension"]["prognos"]["value"], v1["predictions"][0]["value"]),
              f"warehouse card {doc} vs /v1 {v1}")
    # 412: no prefetch, a stay the warehouse does not have
    st, _, doc = hook("readmission-risk", dict(s0, encounter_id="E-not-loaded-9"), prefetch=False)
    check(st == 412 and doc["error"]["code"] == "prefetch_required", f"412 {st} {doc}")
    # incomplete prefetch is no prefetch
    part = dict(s0, prefetch={k: v for k, v in s0["prefetch"].items() if k != "conditions"}, encounter_id="E-not-loaded-9")
    st, _, doc = hook("readmission-risk", part)
    check(st == 412, f"incomplete prefetch {st} {doc}")
    # 400s
    bodies = {
        "hook": {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p", "encounterId": "e"}},
        "context": {"hook": "encounter-discharge", "hookInstance": "x"},
        "encounterId": {"hook": "encounter-discharge", "hookInstance": "x", "context": {"patientId": "p"}},
        "unknown": {"hook": "encounter-discharge", "hookInstance": "x", "context": {"patientId": "p", "encounterId": "e"},
                    "nosuch": 1},
        "prefetch": {"hook": "encounter-discharge", "hookInstance": "x", "context": {"patientId": "p", "encounterId": "e"},
                     "prefetch": dict(s0["prefetch"], patient={"resourceType": "Encounter", "id": "x"})},
    }
    for what, b in bodies.items():
        st, _, doc = hook("readmission-risk", s0, body=b)
        check(st == 400 and isinstance(doc.get("error"), dict), f"bad request ({what}): {st} {doc}")
    st, _, doc = call(N, "POST", "/cds-services/readmission-risk", b"{\"hook\": 01}", template=TPL,
                      headers={"Authorization": "Bearer " + J.token(path0)})
    check(st == 400 and doc["error"]["code"] == "invalid_json", f"strict JSON {st} {doc}")
    st, _, doc = call(N, "POST", "/cds-services/nosuch", {"hook": "x"}, template=TPL,
                      headers={"Authorization": "Bearer " + J.token("/cds-services/nosuch")})
    check(st == 404, f"unknown service {st} {doc}")
    # patient-view without an encounter: no card
    st, _, doc = hook("stay-outlook", s0, body={"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p"}})
    check(st == 200 and doc == {"cards": []}, f"patient-view without encounter {st} {doc}")

    # feedback
    fpath = "/cds-services/readmission-risk/feedback"
    FT = "/cds-services/{id}/feedback"
    c0, c1 = cards[0][1], cards[1][1]
    fb = {"feedback": [
        {"card": c0["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-12-06T10:00:00Z", "acceptedSuggestions": []},
        {"card": c1["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-06T10:01:00Z",
         "overrideReason": {"reason": {"code": "not-relevant", "system": "urn:example:reasons", "display": "Not relevant"},
                            "userComment": "patient Jane Roe is going home to family"}}]}
    st, _, doc = call(N, "POST", fpath, fb, template=FT, headers={"Authorization": "Bearer " + J.token(fpath)})
    check(st == 200 and doc["stored"] == 2, f"feedback {st} {doc}")
    st, _, doc = call(N, "POST", fpath, fb, template=FT)
    check(st == 401, f"feedback without JWT {st}")
    for what, b in {"outcome": {"feedback": [{"card": c0["uuid"], "outcome": "maybe"}]},
                    "card": {"feedback": [{"card": "nope", "outcome": "accepted"}]},
                    "empty": {"feedback": []},
                    "time": {"feedback": [{"card": c0["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-13-45T99:00:00Z"}]}}.items():
        st, _, doc = call(N, "POST", fpath, b, template=FT, headers={"Authorization": "Bearer " + J.token(fpath)})
        check(st == 400, f"bad feedback ({what}): {st} {doc}")
    json.dump([c for _, c in cards[:2]], open(a.cards_out, "w"))
    json.dump(ANSWERS, open(a.answers, "a"))
    open(a.answers, "a").write("\n")
    print(f"cds: cards compared with /v1: {compared}; {len(cards)} cards")
    done("cds")


def main():
    import argparse
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ["v2", "openapi", "cors", "cds"]:
        p = sub.add_parser(name)
        p.add_argument("url")
        p.add_argument("--read")
        p.add_argument("--predict")
        p.add_argument("--rows")
        p.add_argument("--n", type=int, default=300)
        p.add_argument("--answers", default="/dev/null")
        p.add_argument("--min-answers", type=int, default=1)
        p.add_argument("--origin", default="https://ehr.example.org")
        p.add_argument("--no-origins", action="store_true")
        p.add_argument("--stays")
        p.add_argument("--es-key")
        p.add_argument("--rs-key")
        p.add_argument("--other-key")
        p.add_argument("--cards-out", default="/dev/null")
    a = ap.parse_args()
    {"v2": cmd_v2, "openapi": cmd_openapi, "cors": cmd_cors, "cds": cmd_cds}[a.cmd](a)


if __name__ == "__main__":
    main()
