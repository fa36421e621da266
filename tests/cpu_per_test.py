#!/usr/bin/env python3
"""cpu_per_test.py BUILD_DIR [JOBS [REGEX [EXCLUDE_LABEL]]]: the CPU time of each ctest test.

EXCLUDE_LABEL is a regular expression, as ctest's -LE: a test with a label it matches
(in full) is left out; `slow|asan_redundant` gives the ASan pass of scripts/test.sh.

Runs the tests of a build tree as ctest would (its commands, working directories and
environments; the fixture setups first, the cleanups last), JOBS at a time (default 2),
each under a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so that the CPU time of
every process the test starts is counted, the embedded PostgreSQL (which pg_ctl
detaches) and a server included. Prints per test: exit code, wall time, CPU time (user +
system), then the total and the tests sorted by CPU time. On a machine shared with other
jobs the wall time measures the load; the CPU time is what the test itself costs.

PX_FIXTURE_HOMES and PROGNOS_TEST_TMP, when set in the environment, replace the test
tree's (to measure beside a ctest run in the same tree). A failed test's output goes to
cpu-fail-NAME.log in the current directory. Linux only.
"""
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

WRAP = r'''
import ctypes, os, resource, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
t0 = time.time()
pid = os.fork()
if pid == 0:
    os.execvpe(sys.argv[1], sys.argv[1:], os.environ)
rc = None
while True:   # every descendant is reaped here, its CPU time added to ours
    try:
        p, st = os.wait()
        if p == pid:
            rc = os.waitstatus_to_exitcode(st)
    except ChildProcessError:
        break
r = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write("CPU_PER_TEST %d %.2f %.2f %.2f\n" % (rc, time.time() - t0, r.ru_utime, r.ru_stime))
'''


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    build = sys.argv[1]
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    rx = re.compile(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] not in ("", "-") else None
    excl = re.compile(sys.argv[4]) if len(sys.argv) > 4 else None
    d = json.loads(subprocess.check_output(["ctest", "--show-only=json-v1"], cwd=build))
    tests = []
    for t in d["tests"]:
        p = {x["name"]: x["value"] for x in t.get("properties", [])}
        if excl and any(excl.fullmatch(x) for x in p.get("LABELS", [])):
            continue
        env = dict(os.environ)
        for kv in p.get("ENVIRONMENT", []):
            k, v = kv.split("=", 1)
            env[k] = v
        for k in ("PX_FIXTURE_HOMES", "PROGNOS_TEST_TMP"):
            if os.environ.get(k):
                env[k] = os.environ[k]
        tests.append((t["name"], t["command"], p.get("WORKING_DIRECTORY", build), env, p))

    def run(t):
        name, cmd, wd, env, _ = t
        r = subprocess.run([sys.executable, "-c", WRAP] + cmd, cwd=wd, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        m = re.search(r"CPU_PER_TEST (-?\d+) (\S+) (\S+) (\S+)", r.stderr)
        rc, wall, u, s = (int(m[1]), float(m[2]), float(m[3]), float(m[4])) if m else (-1, 0.0, 0.0, 0.0)
        print("%-32s exit %3d  wall %7.1f s  cpu %7.1f s (user %.1f, system %.1f)" % (name, rc, wall, u + s, u, s),
              flush=True)
        if rc != 0:
            with open(f"cpu-fail-{name}.log", "w") as f:
                f.write(r.stdout + r.stderr)
        return u + s, wall, name, rc

    setup = [t for t in tests if "FIXTURES_SETUP" in t[4]]
    clean = [t for t in tests if "FIXTURES_CLEANUP" in t[4]]
    rest = [t for t in tests if t not in setup and t not in clean and (rx is None or rx.search(t[0]))]
    t0 = time.time()
    res = []
    with ThreadPoolExecutor(jobs) as ex:
        res += list(ex.map(run, setup))
        res += list(ex.map(run, rest))
    res += [run(t) for t in clean]
    print("total: wall %.1f s, cpu %.1f s, load average now %s" %
          (time.time() - t0, sum(r[0] for r in res), open("/proc/loadavg").read().split()[:3]))
    for r in sorted(res, reverse=True):
        print("%7.1f s cpu %7.1f s wall  %s%s" % (r[0], r[1], r[2], "" if r[3] == 0 else "  FAILED"))
    sys.exit(1 if any(r[3] != 0 for r in res) else 0)


if __name__ == "__main__":
    main()
