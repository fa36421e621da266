#!/usr/bin/env python3
"""serve_protocols.py: the server's protocols against a real client.

  v2       Open Inference Protocol V2: health, metadata, readiness, and infer on
           generated feature rows equal to /v1 predict for the same instances
           (the same value to /v1's six significant digits, band and every
           contribution); the same checks as /v1 (a value out of range, a wrong
           datatype, a missing or unknown input, a bad shape, strict JSON).
  openapi  /openapi.json validates (openapi-spec-validator), every answer the
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


def cmd_openapi(a):
    from openapi_spec_validator import validate
    from openapi_schema_validator import OAS30Validator
    st, _, doc = Client(a.url).json("GET", "/openapi.json")
    check(st == 200, f"openapi {st}")
    validate(doc)  # raises on an invalid document

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
        return OAS30Validator(deref(schema))
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


def main():
    import argparse
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ["v2", "openapi", "cors"]:
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
    a = ap.parse_args()
    {"v2": cmd_v2, "openapi": cmd_openapi, "cors": cmd_cors}[a.cmd](a)


if __name__ == "__main__":
    main()
