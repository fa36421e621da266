#!/usr/bin/env bash
# notebook.sh: notebooks/registry.ipynb executes headless (jupyter nbconvert) against a
# real registry, without errors, and what it reports equals the registry: the number
# of versions, the champions, and every version's holdout AUC.
source "$(dirname "$0")/lib.sh"
command -v jupyter-nbconvert >/dev/null || fail "jupyter-nbconvert missing (scripts/setup.sh installs it)"
px generate --patients 2000 --seed 5 --out "$WORK/data" >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
for m in readmission mortality los; do px train --model $m --accept-failed-gates >/dev/null; done

export PROGNOS_DB_URL="$(px db url)"
cp "$PROGNOS_SRC/notebooks/registry.ipynb" "$WORK/nb.ipynb"
(cd "$WORK" && timeout 600 jupyter-nbconvert --to notebook --execute nb.ipynb --output executed.ipynb \
    --ExecutePreprocessor.timeout=300 >"$WORK/nbconvert.log" 2>&1) || { cat "$WORK/nbconvert.log"; fail "notebook did not execute"; }

python3 - "$WORK/executed.ipynb" "$(sql "SELECT json_build_object(
      'versions', (SELECT count(*) FROM registry.versions),
      'champions', (SELECT json_object_agg(name, version) FROM registry.aliases WHERE alias = 'champion'),
      'auc', (SELECT json_object_agg(name || '/' || version, round((metrics->'overall'->>'auc')::numeric, 6))
                FROM registry.versions WHERE task = 'binary'))")" <<'PY'
import json, sys
nb = json.load(open(sys.argv[1]))
want = json.loads(sys.argv[2])
errors, images, summary = [], 0, None
for cell in nb["cells"]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            errors.append(out.get("ename"))
        images += "image/png" in out.get("data", {})
        for line in "".join(out.get("text", "")).splitlines():
            if line.startswith("SUMMARY "):
                summary = json.loads(line[8:])
assert not errors, f"notebook errors: {errors}"
assert summary is not None, "no SUMMARY line"
assert images >= 2, f"expected ROC/calibration and coefficient plots, found {images} images"
assert summary["versions"] == want["versions"], (summary, want)
assert summary["champions"] == want["champions"], (summary, want)
assert sorted(summary["auc"]) == sorted(want["auc"]), (sorted(summary["auc"]), sorted(want["auc"]))
for k, v in want["auc"].items():
    assert abs(summary["auc"][k] - float(v)) < 1e-6, (k, summary["auc"].get(k), v)
print(f"notebook: {summary['versions']} versions, {images} plots, AUCs equal the registry's")
PY
ok "registry notebook executes headless and agrees with the registry"
