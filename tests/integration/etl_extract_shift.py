#!/usr/bin/env python3
"""etl_extract_shift.py SRC DST: turns a generated canonical dataset into what a
research EHR extract looks like (used by etl_extracts.sh):
  - every date of a patient shifted by that patient's own offset into a future
    century (1-5 centuries plus 0-364 days, from the patient's number), so that
    ages and lengths of stay hold within a patient, not across patients;
  - birth_date given in full, as YYYY-MM or as YYYY (by patient number mod 3);
  - no total_cost column in encounters.csv;
  - every 7th stay's admission_type 'observation';
  - an extra column in patients.csv ('race_src') and encounters.csv
    ('note_flag') that the layout does not know.
Writes DST.expected: patients, encounters, observation stays, and the
birth year of each patient (pseudonymization happens in the loader, so the
test compares multisets of years)."""
import csv
import datetime
import os
import sys

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)


def read(name):
    with open(os.path.join(src, name), newline="") as f:
        return list(csv.reader(f))


def write(name, rows):
    with open(os.path.join(dst, name), "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def offset(pid):
    k = int("".join(ch for ch in pid if ch.isdigit()) or "0")
    return datetime.timedelta(days=36524 * (1 + k % 5) + (k * 37) % 365)


def shift(value, off):
    if not value:
        return value
    return (datetime.date.fromisoformat(value) + off).isoformat()


patients = read("patients.csv")
hdr = patients[0]
ib, idd = hdr.index("birth_date"), hdr.index("death_date")
out = [hdr + ["race_src"]]
years = []
for i, row in enumerate(patients[1:]):
    off = offset(row[0])
    row[ib] = shift(row[ib], off)
    row[idd] = shift(row[idd], off)
    years.append(row[ib][:4])
    row[ib] = row[ib] if i % 3 == 0 else row[ib][:7] if i % 3 == 1 else row[ib][:4]
    out.append(row + ["x%d" % (i % 4)])
write("patients.csv", out)
pat_off = {row[0]: offset(row[0]) for row in patients[1:]}

enc = read("encounters.csv")
hdr = enc[0]
ia, idis, ic, it = (hdr.index(c) for c in ("admission_date", "discharge_date", "total_cost", "admission_type"))
enc_off = {}
out = [[c for j, c in enumerate(hdr) if j != ic] + ["note_flag"]]
nobs = 0
for i, row in enumerate(enc[1:]):
    off = pat_off[row[1]]
    enc_off[row[0]] = off
    row[ia], row[idis] = shift(row[ia], off), shift(row[idis], off)
    if i % 7 == 3:
        row[it] = "observation"
        nobs += 1
    out.append([c for j, c in enumerate(row) if j != ic] + ["n"])
write("encounters.csv", out)

for name in ("facilities.csv", "providers.csv", "diagnoses.csv"):
    write(name, read(name))
proc = read("procedures.csv")
ip = proc[0].index("procedure_date")
for row in proc[1:]:
    row[ip] = shift(row[ip], enc_off[row[0]])
write("procedures.csv", proc)

with open(dst.rstrip("/") + ".expected", "w") as f:
    f.write("patients %d\nencounters %d\nobservation %d\n" % (len(patients) - 1, len(enc) - 1, nobs))
    f.write("birth_years %s\n" % ",".join(sorted(years)))
