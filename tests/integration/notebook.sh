#!/usr/bin/env bash
# notebook.sh: notebooks/registry.ipynb executes headless (jupyter nbconvert) against a
# real registry, without errors, and what it reports equals the registry: the number
# of versions, the champions, and every version's holdout AUC. Twice: on generated
# data, and on the SynPUF fixture subset trained with --accept-failed-gates, whose
# mortality champion has (almost) no holdout events and so no AUC interval (the
# notebook once failed there formatting None). Every plot labels both axes, and the
# length-of-stay champion is plotted too.
source "$(dirname "$0")/lib.sh"
command -v jupyter-nbconvert >/dev/null || fail "jupyter-nbconvert missing (scripts/setup.sh installs it)"
px generate --patients 2000 --seed 5 --out "$WORK/data" >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
for m in readmission mortality los; do px train --model $m --accept-failed-gates --hier-boot 0 >/dev/null; done

# The notebook runs none of our code (it reads PostgreSQL with psycopg2 and the artifacts'
# files; it calls prognos only for a database URL, given it here): jupyter and the
# comparison are the normal pass's (checks_values, lib.sh); the ASan pass runs the rest.
run_notebook() { # label
export PROGNOS_DB_URL="$(px db url)"
checks_values || return 0
cp "$PROGNOS_SRC/notebooks/registry.ipynb" "$WORK/nb.ipynb"
# The kernel talks to nbconvert over Unix sockets (transport ipc), not TCP: with TCP,
# jupyter picks five free ports and binds them later, and a test running beside it
# that binds one in between fails the kernel's start ("Address already in use",
# seen 2026-12-06 with 12 tests at once).
(cd "$WORK" && timeout 600 jupyter-nbconvert --to notebook --execute nb.ipynb --output executed.ipynb \
    --ExecutePreprocessor.timeout=300 --KernelManager.transport=ipc >"$WORK/nbconvert.log" 2>&1) || { cat "$WORK/nbconvert.log"; fail "$1: notebook did not execute"; }

python3 - "$WORK/executed.ipynb" "$(sql "SELECT json_build_object(
      'versions', (SELECT count(*) FROM registry.versions),
      'champions', (SELECT json_object_agg(name, version) FROM registry.aliases WHERE alias = 'champion'),
      'auc', (SELECT coalesce(json_object_agg(name || '/' || version, round((metrics->'overall'->>'auc')::numeric, 6)), '{}')
                FROM registry.versions WHERE task = 'binary' AND metrics->'overall'->>'auc' IS NOT NULL),
      'undefined', (SELECT coalesce(json_agg(name || '/' || version ORDER BY name || '/' || version), '[]')
                FROM registry.versions WHERE task = 'binary' AND metrics->'overall'->>'auc' IS NOT NULL
                AND metrics->'overall'->>'auc_lo' IS NULL),
      'binary', (SELECT count(*) FROM registry.aliases a JOIN registry.versions v USING (name, version)
                 WHERE alias = 'champion' AND task = 'binary'),
      'regression', (SELECT count(*) FROM registry.aliases a JOIN registry.versions v USING (name, version)
                 WHERE alias = 'champion' AND task <> 'binary'))")" "$1" <<'PY'
import ast, json, sys
nb = json.load(open(sys.argv[1]))
want = json.loads(sys.argv[2]); label = sys.argv[3]
errors, images, summary = [], 0, None
for cell in nb["cells"]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            errors.append(f"{out.get('ename')}: {out.get('evalue')}")
        images += "image/png" in out.get("data", {})
        for line in "".join(out.get("text", "")).splitlines():
            if line.startswith("SUMMARY "):
                summary = json.loads(line[8:])
assert not errors, f"notebook errors: {errors}"
assert summary is not None, "no SUMMARY line"
want_images = (1 if want["binary"] else 0) + want["regression"] + 1
assert images >= want_images, f"expected ROC/calibration, length-of-stay and coefficient plots ({want_images}), found {images}"
assert summary["versions"] == want["versions"], (summary, want)
assert summary["champions"] == (want["champions"] or {}), (summary, want)
assert sorted(summary["auc"]) == sorted(want["auc"]), (sorted(summary["auc"]), sorted(want["auc"]))
for k, v in want["auc"].items():
    assert abs(summary["auc"][k] - float(v)) < 1e-6, (k, summary["auc"].get(k), v)
assert summary["auc_undefined_interval"] == want["undefined"], (summary["auc_undefined_interval"], want["undefined"])
assert summary["plots"] == {"binary": want["binary"], "regression": want["regression"]}, (summary["plots"], want)
# every axis is labelled: each .set(...) that titles a plot names xlabel and ylabel
unlabelled = []
for cell in nb["cells"]:
    if cell["cell_type"] != "code": continue
    src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "set":
            kw = {k.arg for k in node.keywords}
            if "title" in kw and not {"xlabel", "ylabel"} <= kw: unlabelled.append(ast.unparse(node)[:80])
assert not unlabelled, f"plots without axis labels: {unlabelled}"
print(f"notebook {label}: {summary['versions']} versions, {images} plots, AUCs equal the registry's, "
      f"undefined intervals {summary['auc_undefined_interval']}")
PY
}
run_notebook generated
if checks_values; then ok "registry notebook executes headless and agrees with the registry"; fi

# real claims where a champion has no usable holdout: few or no deaths
use_new_home "$WORK/home-synpuf"
# a fixed pseudonymization key fixes the holdout patients: the same versions on every run
(umask 077; echo 5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed >"$PROGNOS_HOME/secret.key")
px etl load --format synpuf --source "$SYNPUF/sample-1" --quiet >/dev/null
px etl load --format synpuf --source "$SYNPUF/sample-2" --quiet >/dev/null
# small holdouts: with ~1% 30-day mortality, a holdout of 14-40 stays has at most one
# death (no AUC interval) in most of them; the patient groups depend on the home's
# pseudonymization key (fixed above), so six are tried and the first without an
# interval becomes champion
px features build --set all >/dev/null
# (each with its own ridge penalty: a version differing only in its split would be the same version)
for s in "0.2 0.1 0" "0.3 0.1 0.1" "0.2 0.15 0.2" "0.25 0.12 0.3" "0.3 0.15 0.4" "0.15 0.2 0.5"; do
    read -r ht hp l2 <<<"$s"
    px train --model mortality --accept-failed-gates --no-build --hier-boot 0 --holdout-time "$ht" --holdout-patients "$hp" \
        --l2 "$l2" >/dev/null 2>&1 || true   # a holdout may also be too small to train (exit 1): the next one
done
for m in readmission los; do px train --model $m --accept-failed-gates --no-build --hier-boot 0 >/dev/null; done
v=$(sql "SELECT min(version) FROM registry.versions WHERE name = 'mortality'
         AND metrics->'overall'->>'auc_lo' IS NULL")
[ -n "$v" ] || fail "no mortality version without an AUC interval: $(sql "SELECT version, metrics->'overall'->>'events' FROM registry.versions WHERE name = 'mortality'")"
# exit 3: it is the champion already (the first version)
set +e; px registry promote mortality "$v" --accept-failed-gates --reason "notebook test: no AUC interval" >"$WORK/out" 2>&1
rc=$?; set -e
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || fail "promote mortality $v exited $rc: $(cat "$WORK/out")"
assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = 'mortality' AND alias = 'champion'")" "$v" "mortality champion"
echo "synpuf mortality champion v$v: $(sql "SELECT metrics->'overall'->>'events' || ' holdout events, AUC ' ||
      coalesce(round((metrics->'overall'->>'auc')::numeric, 3)::text, 'undefined') FROM registry.versions WHERE name = 'mortality' AND version = $v")"
run_notebook synpuf
if checks_values; then ok "registry notebook runs on champions without holdout events or AUC intervals, and plots the LOS model"
else ok "a champion without an AUC interval promoted on the SynPUF subset (the notebook run on it in the normal pass)"; fi

# the executive report of the same registry warns about the champion without holdout events
caution() { # html -> "kind:measure" of each caution banner
    python3 - "$1" <<'PY'
import sys
from html.parser import HTMLParser
class P(HTMLParser):
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "caution" in (a.get("class") or "").split(): print(f"{a['data-caution']}:{a['data-measure']}")
P().feed(open(sys.argv[1]).read())
PY
}
assert_exit 0 px kpi compute --period all
assert_exit 0 px kpi report --period all --out "$WORK/weak.html"
caution "$WORK/weak.html" | grep -qx "auc:mortality" || fail "no caution for the mortality champion without holdout events: $(caution "$WORK/weak.html")"
grep -qE "its holdout had no events|its holdout AUC has no interval" "$WORK/weak.html" || fail "the caution does not say why"
ok "kpi report: a caution banner for the champion without holdout events"
