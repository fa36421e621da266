#!/usr/bin/python3
"""marts_check.py: recomputes every mart table (features/sql/marts.sql, documented
in features/README.md) with pandas from the canonical CSV files the warehouse was
loaded from, and compares them with the tables as exported by features_marts.sh.

usage: marts_check.py DATA_DIR EXPORT_DIR SECRET_KEY_FILE

Identifiers are pseudonymized here with the installation's key (HMAC-SHA256, as
engine/pseudo.c documents), so rows are matched by key. Counts and sums (in
cents) must be equal; rounded means and medians may differ by one unit of their
last decimal (pandas rounds binary floats, PostgreSQL numeric). A NULL in the
database must be NaN here and the other way round. Exit 0 when all equal."""
import hashlib
import hmac
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd

data, exp, keyfile = sys.argv[1:4]
key = bytes.fromhex(open(keyfile).read().strip())


def pseudo(domain, v):
    h = hmac.new(key, f"{domain}:{v.strip()}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


enc = pd.read_csv(f"{data}/encounters.csv", dtype=str, keep_default_na=False)
enc["patient_id"] = enc["patient_id"].map(lambda v: pseudo("patient", v))
enc["encounter_id"] = enc["encounter_id"].map(lambda v: pseudo("encounter", v))
enc["adm"] = pd.to_datetime(enc["admission_date"])
enc["dis"] = pd.to_datetime(enc["discharge_date"])
enc["los"] = (enc["dis"] - enc["adm"]).dt.days
enc["year"] = enc["adm"].dt.year
enc["cost"] = pd.to_numeric(enc["total_cost"].replace("", np.nan))
enc["cents"] = (enc["cost"] * 100).round()
enc["drg"] = enc["drg"].replace("", None)
enc["attending_id"] = enc["attending_id"].replace("", None)
fac = pd.read_csv(f"{data}/facilities.csv", dtype=str, keep_default_na=False).set_index("facility_id")
prov = pd.read_csv(f"{data}/providers.csv", dtype=str, keep_default_na=False).set_index("provider_id")

failures = []


def load(name):
    return pd.read_csv(f"{exp}/{name}.csv", dtype=str, keep_default_na=False)


def compare(name, want, keys, exact=(), cents=(), rounded=(), text=()):
    """want: DataFrame with keys + columns; the export has the same keys."""
    got = load(name)
    for k in keys:
        want[k] = want[k].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    if len(got) != len(want):
        failures.append(f"{name}: {len(got)} rows, expected {len(want)}")
        return
    m = got.merge(want, on=list(keys), how="outer", suffixes=("", "_want"), indicator=True)
    bad = m[m["_merge"] != "both"]
    if len(bad):
        failures.append(f"{name}: keys differ: {bad[list(keys) + ['_merge']].head().to_dict('records')}")
        return

    def num(s):
        return pd.to_numeric(s.replace("", np.nan))

    for c in exact:
        g, w = num(m[c]), m[c + "_want"].astype(float)
        diff = ~((g == w) | (g.isna() & w.isna()))
        if diff.any():
            failures.append(f"{name}.{c}: {int(diff.sum())} rows differ, e.g. "
                            f"{m.loc[diff, list(keys) + [c, c + '_want']].head(3).to_dict('records')}")
    for c in cents:
        g, w = (num(m[c]) * 100).round(), m[c + "_want"].astype(float)
        diff = ~((g == w) | (g.isna() & w.isna()))
        if diff.any():
            failures.append(f"{name}.{c} (cents): {int(diff.sum())} rows differ, e.g. "
                            f"{m.loc[diff, list(keys) + [c, c + '_want']].head(3).to_dict('records')}")
    for c, unit in rounded:
        g, w = num(m[c]), m[c + "_want"].astype(float)
        diff = ~(((g - w).abs() <= unit * 1.01) | (g.isna() & w.isna()))
        if diff.any():
            failures.append(f"{name}.{c}: {int(diff.sum())} rows differ by more than {unit}, e.g. "
                            f"{m.loc[diff, list(keys) + [c, c + '_want']].head(3).to_dict('records')}")
    for c in text:
        g, w = m[c], m[c + "_want"].fillna("").astype(str)
        diff = g != w
        if diff.any():
            failures.append(f"{name}.{c}: {int(diff.sum())} rows differ, e.g. "
                            f"{m.loc[diff, list(keys) + [c, c + '_want']].head(3).to_dict('records')}")


def cost_aggs(keys):
    """stays, patients, costed stays, total (cents), mean, median, LOS mean of each group of keys
    (named aggregations: a Python function per group costs seconds at a few thousand groups)."""
    e = enc.assign(costed_los=enc["los"].clip(lower=1).where(enc["cost"].notna()))
    return e.groupby(keys, dropna=False).agg(
        stays=("encounter_id", "size"), patients=("patient_id", "nunique"), stays_costed=("cost", "count"),
        cost_total=("cents", lambda c: c.sum(min_count=1)), cost_mean=("cost", "mean"),
        cost_median=("cost", "median"), los_mean=("los", "mean"),
        costed_days=("costed_los", "sum")).reset_index()


# cost of care per patient and admission year
w = enc.groupby(["patient_id", "year"]).agg(
    stays=("encounter_id", "size"), stays_costed=("cost", "count"),
    cost_total=("cents", lambda c: c.sum(min_count=1)), los_days_total=("los", "sum")).reset_index()
compare("cost_patient_year", w, ["patient_id", "year"], exact=["stays", "stays_costed", "los_days_total"],
        cents=["cost_total"])

# per facility and year
w = cost_aggs(["facility_id", "year"])
w["facility_name"] = w["facility_id"].map(fac["name"])
w["cost_per_day"] = (w["cost_total"] / 100) / w["costed_days"].replace(0, np.nan)
compare("cost_facility", w, ["facility_id", "year"], exact=["stays", "patients", "stays_costed"],
        cents=["cost_total"], rounded=[("cost_mean", 0.01), ("cost_median", 0.01), ("cost_per_day", 0.01),
                                       ("los_mean", 0.01)], text=["facility_name"])

# per DRG and year (no DRG: its own group)
w = cost_aggs(["drg", "year"])
compare("cost_drg", w, ["drg", "year"], exact=["stays", "patients", "stays_costed"], cents=["cost_total"],
        rounded=[("cost_mean", 0.01), ("cost_median", 0.01), ("los_mean", 0.01)])

# readmissions: each stay's next admission after its discharge
data_end = enc["adm"].max()
rows = []
# (plain records: itertuples and a group per patient cost seconds)
by_patient = {}
for s in enc.sort_values(["adm", "encounter_id"]).to_dict("records"):
    by_patient.setdefault(s["patient_id"], []).append(SimpleNamespace(**s))
for pid, stays in by_patient.items():
    for s in stays:
        nxt = next((t for t in stays if t.adm > s.dis), None)
        days = (nxt.adm - s.dis).days if nxt is not None else None
        complete = s.dis + pd.Timedelta(days=30) <= data_end
        readmit = 1 if days is not None and days <= 30 else (0 if complete else None)
        rows.append({"encounter_id": s.encounter_id, "patient_id": pid, "facility_id": s.facility_id, "year": s.year,
                     "index_eligible": "t" if s.discharge_disposition not in ("expired", "transfer_acute", "ama") else "f",
                     "followup_complete": "t" if complete else "f",
                     "next_encounter_id": nxt.encounter_id if nxt is not None else "",
                     "next_facility_id": nxt.facility_id if nxt is not None else "",
                     "next_admission_date": nxt.admission_date if nxt is not None else "",
                     "days_to_next": days if days is not None else np.nan,
                     "readmit_30d": readmit if readmit is not None else np.nan})
rd = pd.DataFrame(rows)
readmitted = set(rd.loc[(rd["index_eligible"] == "t") & (rd["readmit_30d"] == 1), "next_encounter_id"])
rd["is_readmission"] = rd["encounter_id"].map(lambda e: "t" if e in readmitted else "f")
compare("readmission", rd.copy(), ["encounter_id"], exact=["days_to_next", "readmit_30d"],
        text=["patient_id", "facility_id", "year", "index_eligible", "followup_complete", "next_encounter_id",
              "next_facility_id", "next_admission_date", "is_readmission"])
if not (rd["readmit_30d"] == 1).any() or not (rd["readmit_30d"] == 0).any() or not rd["readmit_30d"].isna().any():
    failures.append("readmission: the data has no readmission, no stay without one, or no incomplete follow-up")

ix = rd[(rd["index_eligible"] == "t") & (rd["followup_complete"] == "t")]
ix = ix.assign(readmitted=(ix["readmit_30d"] == 1).astype(int),
               days_readmitted=ix["days_to_next"].where(ix["readmit_30d"] == 1),
               elsewhere=((ix["readmit_30d"] == 1) & (ix["next_facility_id"] != ix["facility_id"])).astype(int))
w = ix.groupby(["facility_id", "year"]).agg(
    index_stays=("encounter_id", "size"), readmissions_30d=("readmitted", "sum"),
    readmit_rate=("readmit_30d", "mean"), days_to_readmission_median=("days_readmitted", "median"),
    readmitted_elsewhere=("elsewhere", "sum")).reset_index()
compare("readmission_facility", w, ["facility_id", "year"],
        exact=["index_stays", "readmissions_30d", "readmitted_elsewhere"],
        rounded=[("readmit_rate", 0.0001), ("days_to_readmission_median", 0.1)])

# provider utilization per facility, attending (none: its own row) and year
w = enc.groupby(["facility_id", "attending_id", "year"], dropna=False).agg(
    stays=("encounter_id", "size"), patients=("patient_id", "nunique"), los_days_total=("los", "sum"),
    los_mean=("los", "mean"), los_median=("los", "median"), stays_costed=("cost", "count"),
    cost_total=("cents", lambda c: c.sum(min_count=1)), cost_mean=("cost", "mean")).reset_index()
w["attending_name"] = w["attending_id"].map(lambda a: prov["name"].get(a, "") if a is not None else "")
w["specialty"] = w["attending_id"].map(lambda a: prov["specialty"].get(a, "") if a is not None else "")
compare("provider_utilization", w, ["facility_id", "attending_id", "year"],
        exact=["stays", "patients", "los_days_total", "stays_costed"], cents=["cost_total"],
        rounded=[("los_mean", 0.01), ("los_median", 0.1), ("cost_mean", 0.01)], text=["attending_name", "specialty"])

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"marts equal the pandas recomputation ({len(enc)} stays, {int(ix['readmit_30d'].sum())} readmissions)")
