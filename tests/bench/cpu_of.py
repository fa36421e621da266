#!/usr/bin/python3
"""cpu_of.py PGDATA[:PGDATA...] OUT CMD...: runs CMD (its standard output to the file OUT) and
prints three numbers: the CPU seconds of CMD and its children, the CPU seconds the
PostgreSQL cluster(s) of PGDATA spent meanwhile (the postmaster's children, parallel
workers included, and those it reaped), and the wall seconds. On a machine that
other jobs load, CPU seconds compare two runs where wall time does not (wall time
there mostly measures the other jobs); the cluster's figure includes its
background processes (checkpointer, autovacuum) over the same interval. With
several clusters, each one's CPU seconds follow (in the order given)."""
import glob, os, resource, subprocess, sys, time

pgdata, out, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
# PGDATA may list several clusters, colon-separated (a coordinator and its shards):
# their CPU seconds are summed, and each cluster's follows the wall seconds
order = [int(open(os.path.join(d, "postmaster.pid")).readline()) for d in pgdata.split(":")]
pms = set(order)
tck = os.sysconf("SC_CLK_TCK")


def cluster():
    """CPU seconds of each cluster (in the order given)"""
    tot = dict.fromkeys(order, 0)
    for d in glob.glob("/proc/[0-9]*/stat"):
        try:
            st = open(d).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(d.split("/")[2]), int(st[1])
        for pm in (pid, ppid):
            if pm in tot:
                tot[pm] += sum(int(x) for x in st[11:15])   # utime stime cutime cstime
                break
    return [tot[pm] / tck for pm in order]


def sessions():
    """the clusters' client backends (a CPU second of one that exited counts in
    its postmaster's only once reaped: CMD's backends, and on a sharded warehouse
    the shards' backends of the coordinator's connections, end just after CMD)"""
    got = set()
    for d in glob.glob("/proc/[0-9]*"):
        try:
            st = open(d + "/stat").read().rsplit(")", 1)[1].split()
            if int(st[1]) in pms and b"[local]" in open(d + "/cmdline", "rb").read():
                got.add(d)
        except (OSError, IndexError):
            continue
    return got


s0 = sessions()
c0, t0, r0 = cluster(), time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    rc = subprocess.run(cmd, stdout=f).returncode
r1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
for _ in range(200):   # until CMD's sessions are gone (at most 10 s)
    if not sessions() - s0:
        break
    time.sleep(0.05)
c1 = cluster()
if rc:
    sys.exit(rc)
each = [b - a for a, b in zip(c0, c1)]
print(f"{r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime:.2f} {sum(each):.2f} {t1 - t0:.2f}"
      + ("".join(f" {x:.2f}" for x in each) if len(each) > 1 else ""))
