#!/usr/bin/env python3
"""cover_per_test.py COV_BUILD_DIR [JOBS [CPU_TABLE]]: which C lines and branches each ctest test reaches,
and a smallest-cost set of tests that together reach all of them (the ASan pass's set).

COV_BUILD_DIR is a build tree configured for gcov, e.g.
    cmake -S . -B build-cov -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="--coverage -O0" \
          -DCMAKE_EXE_LINKER_FLAGS=--coverage -DCMAKE_SHARED_LINKER_FLAGS=--coverage
Every test runs as ctest would (its command, working directory and environment; fixture
setups first), JOBS at a time, each with its own GCOV_PREFIX, so that the counts of the
processes it starts (the CLI, servers, the C test drivers) land in a directory of its
own. A unit is a source line executed, or a branch taken, in a project source file.

With CPU_TABLE (the output of tests/cpu_per_test.py on the ASan build: lines
"NAME exit RC wall W s cpu C s ...") the cost of a test is its ASan CPU time, else 1.
The set is chosen greedily (most new units per CPU-second first) among the tests
that are not label `slow`; the unit and fuzz-smoke tests are always in it. It prints
each test's units, the chosen set with what each adds, the tests left out (every unit
they reach is reached by the set), and the units only `slow` tests reach, if any.
PX_COVER_REUSE=1 analyses the counts of the last run again (another CPU_TABLE);
PX_COVER_ONLY=REGEX runs the matching tests again (and the fixture setups), keeping the
counts of the others.
A server stopped with SIGKILL writes no counts (gcov writes at exit): the lines
only such a process reaches are not seen here.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def slow_names(labels):
    return {n for n, l in labels.items() if "slow" in l}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    build = os.path.abspath(sys.argv[1])
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    cost = {}
    if len(sys.argv) > 3:
        for line in open(sys.argv[3]):
            m = re.match(r"(\S+)\s+exit\s+-?\d+\s+wall\s+\S+ s\s+cpu\s+(\S+) s", line)
            if m:
                cost[m[1]] = max(float(m[2]), 0.05)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(build, "cover-per-test")
    reuse = os.environ.get("PX_COVER_REUSE") == "1"
    only = re.compile(os.environ["PX_COVER_ONLY"]) if os.environ.get("PX_COVER_ONLY") else None
    if not reuse and not only:
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
    strip = len([p for p in build.split("/") if p])
    d = json.loads(subprocess.check_output(["ctest", "--show-only=json-v1"], cwd=build))
    tests = []
    for t in d["tests"]:
        p = {x["name"]: x["value"] for x in t.get("properties", [])}
        env = dict(os.environ)
        for kv in p.get("ENVIRONMENT", []):
            k, v = kv.split("=", 1)
            env[k] = v
        env["GCOV_PREFIX"] = os.path.join(out, t["name"])
        env["GCOV_PREFIX_STRIP"] = str(strip)
        tests.append((t["name"], t["command"], p.get("WORKING_DIRECTORY", build), env, p))

    def run(t):
        name, cmd, wd, env, _ = t
        t0 = time.time()
        r = subprocess.run(cmd, cwd=wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, errors="replace")
        print("%-32s exit %3d  wall %7.1f s" % (name, r.returncode, time.time() - t0), flush=True)
        if r.returncode != 0:
            with open(os.path.join(out, f"fail-{name}.log"), "w") as f:
                f.write(r.stdout)
        return r.returncode

    setup = [t for t in tests if "FIXTURES_SETUP" in t[4]]
    clean = [t for t in tests if "FIXTURES_CLEANUP" in t[4]]
    rest = [t for t in tests if t not in setup and t not in clean]
    if only:   # PX_COVER_ONLY=REGEX: these tests run again, the others' counts are kept
        rest = [t for t in rest if only.search(t[0])]
        for t in setup + rest:
            shutil.rmtree(os.path.join(out, t[0]), ignore_errors=True)
    if not reuse:   # PX_COVER_REUSE=1: the counts of the last run, analysed again
        with ThreadPoolExecutor(jobs) as ex:
            rcs = list(ex.map(run, setup)) + list(ex.map(run, rest))
        for t in clean:
            run(t)
        if any(rcs):
            print("some tests failed: their coverage is what they reached before failing")

    gcno = []
    for root, _, files in os.walk(build):
        if root.startswith(out):
            continue
        gcno += [os.path.join(root, f) for f in files if f.endswith(".gcno")]

    def units(name):
        """The units of one test: (file, line) executed and (file, line, branch) taken."""
        tdir = os.path.join(out, name)
        if not os.path.isdir(tdir):
            return name, set()
        gcda = []
        for g in gcno:   # gcov reads the notes file beside the data file
            rel = os.path.relpath(g, build)
            da = os.path.join(tdir, rel[:-5] + ".gcda")
            if os.path.exists(da):
                if not os.path.exists(da[:-5] + ".gcno"):
                    os.link(g, da[:-5] + ".gcno")
                gcda.append(da)
        u = set()
        if not gcda:
            return name, u
        r = subprocess.run(["gcov", "-t", "-j", "-b"] + gcda, cwd=tdir, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        dec = json.JSONDecoder()
        s, i = r.stdout, 0
        while True:
            while i < len(s) and s[i].isspace():
                i += 1
            if i >= len(s):
                break
            doc, i = dec.raw_decode(s, i)
            for f in doc["files"]:
                path = os.path.normpath(os.path.join(doc.get("current_working_directory", ""), f["file"]))
                if not path.startswith(src + "/") or "/build" in path[len(src):]:
                    continue
                path = path[len(src) + 1:]
                for ln in f["lines"]:
                    if ln["count"] > 0:
                        u.add((path, ln["line_number"]))
                        for k, b in enumerate(ln.get("branches", [])):
                            if b["count"] > 0:
                                u.add((path, ln["line_number"], k))
        return name, u

    with ThreadPoolExecutor(jobs) as ex:
        cov = dict(ex.map(units, [t[0] for t in tests]))
    labels = {t[0]: t[4].get("LABELS", []) for t in tests}
    print("\nunits reached (lines executed + branches taken), by test:")
    for n in sorted(cov, key=lambda n: -len(cov[n])):
        print("%8d  %-32s %s" % (len(cov[n]), n, ",".join(labels[n])))
    print("\nunits only one test reaches (not counting `slow` tests), by test:")
    for n in sorted(cov, key=lambda n: -cost.get(n, 1.0)):
        if n in slow_names(labels):
            continue
        others = set().union(*(cov[m] for m in cov if m != n and "slow" not in labels[m]))
        mine = sorted(cov[n] - others)
        if mine:
            print("  %-32s %5d  e.g. %s" % (n, len(mine), " ".join(":".join(map(str, u)) for u in mine[:6])))
    allu = set().union(*cov.values())
    slow = {n for n in cov if "slow" in labels[n]}
    fixture = {n for n in cov if "fixture" in labels[n]}
    always = {n for n in cov if n not in slow and n not in fixture and not n.startswith("it_")}
    chosen = sorted(always | fixture)
    have = set().union(*(cov[n] for n in chosen)) if chosen else set()
    reach = set().union(*(cov[n] for n in cov if n not in slow))
    cand = [n for n in cov if n not in slow and n not in chosen]
    print("\nthe ASan set: unit, fuzz-smoke and fixture tests, then by new units per CPU-second:")
    while reach - have:
        best = max(cand, key=lambda n: len(cov[n] - have) / cost.get(n, 1.0))
        new = cov[best] - have
        if not new:
            break
        print("  %-32s +%6d units  (cpu %.1f s)" % (best, len(new), cost.get(best, 1.0)))
        chosen.append(best)
        cand.remove(best)
        have |= new
    left = sorted(n for n in cand)
    print("\nintegration tests left out of the ASan set (all their units reached by the set):")
    for n in left:
        print("  %-32s cpu %.1f s" % (n, cost.get(n, 1.0)))
    only_slow = allu - reach
    print("\nunits: %d in all, %d reached by the ASan set, %d only by `slow` tests" %
          (len(allu), len(have), len(only_slow)))
    for u in sorted(only_slow)[:40]:
        print("  only slow:", ":".join(map(str, u)))
    print("\nASAN_SKIP " + " ".join(left))


if __name__ == "__main__":
    main()
