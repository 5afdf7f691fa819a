#!/usr/bin/env python3
"""Helpers for benches/images/run.sh: resident memory of a process tree, the image ID of an
OCI layout, and the report table.  The layout and free-port helpers come from
benches/registry/benchlib.py."""
import json
import os
import statistics
import sys


def children(pid):
    kids = []
    try:
        for task in os.listdir("/proc/%s/task" % pid):
            try:
                with open("/proc/%s/task/%s/children" % (pid, task)) as f:
                    kids += f.read().split()
            except OSError:
                pass
    except OSError:
        pass
    return kids


def rss_kib(pid):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cmd_rss(pid):
    """RSS (KiB) of PID plus all its live descendants, and the process names counted."""
    total, names, todo = 0, [], [str(pid)]
    while todo:
        p = todo.pop()
        try:
            total += rss_kib(p)
            with open("/proc/%s/comm" % p) as f:
                names.append(f.read().strip())
        except OSError:
            continue
        todo += children(p)
    print("%d\t%s" % (total, ",".join(sorted(names))))
    return 0


def cmd_config_digest(layout, tag):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    descs = index["manifests"]
    pick = next((d for d in descs
                 if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag), descs[0])
    with open(os.path.join(layout, "blobs", *pick["digest"].split(":", 1))) as f:
        print(json.load(f)["config"]["digest"])
    return 0


# measure, unit, ratio direction, target, label
MEASURES = [
    ("pull_s", "s", "<=", 0.5, "docker pull, wall time"),
    ("import_s", "s", "<=", 0.5, "docker import, wall time"),
    ("idle_rss_mb", "MiB", "<=", 0.2, "idle RSS after the pulls"),
]


def cmd_report(tsv):
    vals, notes, meta = {}, {}, {}
    with open(tsv) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            m, sys_, v, note = (parts + ["", "", "", ""])[:4]
            if m == "meta":
                meta[sys_] = v
                continue
            key = (m, sys_)
            vals.setdefault(key, [])
            if v != "":
                vals[key].append(float(v))
            if note:
                notes.setdefault(key, []).append(note)
    rows = [("measure", "berth", "dockerd", "ratio", "target", "met?")]
    all_met = True
    for m, unit, op, target, label in MEASURES:
        cells, med = [], {}
        for s in ("berth", "dockerd"):
            key = (m, s)
            if notes.get(key):
                cells.append(notes[key][0])
                med[s] = None
            elif vals.get(key):
                med[s] = statistics.median(vals[key])
                n = len(vals[key])
                cells.append("%.2f %s%s" % (med[s], unit, " (median of %d)" % n if n > 1 else ""))
            else:
                cells.append("not run")
                med[s] = None
        if med["berth"] is not None and med["dockerd"]:
            r = med["berth"] / med["dockerd"]
            ratio = "%.3f" % r
            met = "yes" if (r <= target if op == "<=" else r >= target) else "NO"
        else:
            ratio, met = "-", "NO (not measured)"
        all_met &= met == "yes"
        rows.append((label, cells[0], cells[1], "berth/dockerd " + ratio, "%s %s" % (op, target), met))
    w = [max(len(r[i]) for r in rows) for i in range(6)]
    for i, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w[j]) for j, c in enumerate(r)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for k, v in sorted(meta.items()):
        print("  %s: %s" % (k, v))
    return 0 if all_met else 3


def main(argv):
    cmd, args = argv[1], argv[2:]
    return {"rss": cmd_rss, "config-digest": cmd_config_digest, "report": cmd_report}[cmd](*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
