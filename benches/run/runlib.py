#!/usr/bin/env python3
"""Helpers for benches/run/run.sh (kept out of bash for clarity).

Subcommands:
  rootfs ARCHIVE DIR          unpack a `docker save` archive's layers, in order, into DIR,
                              applying whiteouts (.wh.NAME) and opaque directories (.wh..wh..opq)
  spec CONFIG_JSON            make a `runc spec` config run `true`: args ["true"], no terminal
  find-proc KIND NEEDLE       print the pid of the per-container process whose command line
                              contains NEEDLE: KIND containerd-shim (containerd-shim-runc-v2),
                              berth-shim (`berth shim ...`) or conmon (podman)
  mem PID                     print "VmRSS RssAnon Pss" of PID in KiB
  report TSV                  print the tables; exit 3 when a target is missed
"""
import json
import math
import os
import shutil
import statistics
import sys
import tarfile


def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


# ------------------------------------------------------------------ the runc bundle
def _remove(path):
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        shutil.rmtree(path)


def _inside(root, rel):
    full = os.path.normpath(os.path.join(root, rel))
    if full != root and not full.startswith(root + os.sep):
        die("layer entry escapes the root: %s" % rel)
    # refuse to write through a symlink in a parent directory
    parent = os.path.dirname(full)
    while parent != root and parent.startswith(root):
        if os.path.islink(parent):
            die("layer entry goes through a symlink: %s" % rel)
        parent = os.path.dirname(parent)
    return full


def cmd_rootfs(archive, out):
    out = os.path.realpath(out)
    os.makedirs(out, exist_ok=True)
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        layers = manifest[0]["Layers"]
        for name in layers:
            with tarfile.open(fileobj=outer.extractfile(name), mode="r:*") as layer:
                members = layer.getmembers()
                # whiteouts first (they apply to lower layers only), then the entries
                for m in members:
                    base = os.path.basename(m.name)
                    parent = os.path.dirname(m.name)
                    if base == ".wh..wh..opq":
                        d = _inside(out, parent)
                        if os.path.isdir(d) and not os.path.islink(d):
                            for e in os.listdir(d):
                                _remove(os.path.join(d, e))
                    elif base.startswith(".wh."):
                        _remove(_inside(out, os.path.join(parent, base[4:])))
                for m in members:
                    if os.path.basename(m.name).startswith(".wh."):
                        continue
                    full = _inside(out, m.name)
                    if not m.isdir() and (os.path.lexists(full)):
                        _remove(full)
                    if m.islnk():
                        _inside(out, m.linkname)
                    layer.extract(m, out, set_attrs=True, numeric_owner=True)
    return 0


def cmd_spec(path):
    with open(path) as f:
        spec = json.load(f)
    spec["process"]["args"] = ["true"]
    spec["process"]["terminal"] = False
    with open(path, "w") as f:
        json.dump(spec, f, indent=1)
    return 0


# ------------------------------------------------------------------ processes
def _cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _comm(pid):
    try:
        with open("/proc/%s/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def cmd_find_proc(kind, needle):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        argv = _cmdline(pid)
        if not argv or not any(needle in a for a in argv):
            continue
        comm = _comm(pid)
        if kind == "containerd-shim":
            ok = comm.startswith("containerd-shim") or os.path.basename(argv[0]).startswith("containerd-shim")
        elif kind == "berth-shim":
            ok = len(argv) > 1 and argv[1] == "shim" and os.path.basename(argv[0]).startswith("berth")
        elif kind == "conmon":
            ok = comm == "conmon"
        else:
            die("unknown kind " + kind)
        if ok:
            found.append(int(pid))
    if not found:
        return 1
    print(min(found))
    return 0


def cmd_mem(pid):
    vals = {"VmRSS": 0, "RssAnon": 0, "Pss": 0}
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            k = line.split(":")[0]
            if k in vals:
                vals[k] = int(line.split()[1])
    try:
        with open("/proc/%s/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    vals["Pss"] = int(line.split()[1])
    except OSError:
        pass
    print("%d %d %d" % (vals["VmRSS"], vals["RssAnon"], vals["Pss"]))
    return 0


# ------------------------------------------------------------------ the report
SYSTEMS = [  # key, label, command
    ("dockerd", "dockerd 20.10 + containerd + runc", "docker run --rm --network none IMG true"),
    ("berth", "berth daemon", "docker run --rm --network none IMG true"),
    ("podman", "podman (runc)", "podman run --rm --network none IMG true"),
    ("runc", "runc, prepared bundle", "runc run --bundle B ID  (args: true)"),
    ("berth-run", "berth run", "berth run --rm --network none IMG true"),
    ("cli-floor", "(info) docker CLI alone: stub answering at once",
     "docker run --rm --network none IMG true"),
]
SHIMS = [  # key, label
    ("containerd-shim", "containerd-shim-runc-v2 (dockerd)"),
    ("berth-shim", "berth shim (berth daemon)"),
    ("conmon", "conmon (podman)"),
]
SHIM_TARGET_MB = 2.0


def p90(v):
    s = sorted(v)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def table(rows):
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w[j]) for j, c in enumerate(r)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (x + 2) for x in w) + "|")


def mb(kib):
    return kib * 1024 / 1e6


def cmd_report(tsv):
    runs, notes, mem, meta = {}, {}, {}, []
    with open(tsv) as f:
        for line in f:
            parts = (line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]
            kind, key, val, note = parts
            if kind == "meta":
                meta.append((key, val))
            elif kind == "run_us":
                runs.setdefault(key, []).append(int(val) / 1000.0)
            elif kind == "mem_kib":
                mem[key] = [int(x) for x in val.split()]
            elif kind == "note":
                notes.setdefault(key, note)

    med = {}
    rows = [("system", "command", "median ms", "p90 ms", "mean ms", "min ms", "runs")]
    for key, label, cmd in SYSTEMS:
        v = runs.get(key, [])
        if key in notes:
            rows.append((label, cmd, notes[key], "", "", "", str(len(v))))
        elif v:
            med[key] = statistics.median(v)
            rows.append((label, cmd, "%.1f" % med[key], "%.1f" % p90(v), "%.1f" % statistics.mean(v),
                         "%.1f" % min(v), str(len(v))))
        else:
            rows.append((label, cmd, "not run", "", "", "", "0"))
    table(rows)
    print()

    rows = [("per-container process, `sleep 3600` running", "RSS MB", "anon MB", "PSS MB")]
    for key, label in SHIMS:
        if key in notes:
            rows.append((label, notes[key], "", ""))
        elif key in mem:
            r, a, p = mem[key]
            rows.append((label, "%.2f" % mb(r), "%.2f" % mb(a), "%.2f" % mb(p)))
        else:
            rows.append((label, "not run", "", ""))
    table(rows)
    print()

    all_met = True
    rows = [("target", "ratio / value", "target", "met?")]

    def ratio_row(label, num, den, op, target, fmt):
        nonlocal all_met
        if num in med and den in med and med[den] > 0:
            r = med[num] / med[den]
            met = r >= target if op == ">=" else r <= target
            rows.append((label, fmt % r, "%s %s" % (op, target), "yes" if met else "NO"))
            all_met &= met
        else:
            missing = [k for k in (num, den) if k not in med]
            why = "; ".join("%s: %s" % (k, notes.get(k, "not run")) for k in missing)
            rows.append((label, "- (%s)" % why, "%s %s" % (op, target), "NO (not measured)"))
            all_met = False

    ratio_row("dockerd / berth daemon, docker run median", "dockerd", "berth", ">=", 10, "%.2fx")
    ratio_row("berth run / runc run, median", "berth-run", "runc", "<=", 0.7, "%.3f")
    if "berth-shim" in mem and "berth-shim" not in notes:
        v = mb(mem["berth-shim"][0])
        met = v <= SHIM_TARGET_MB
        all_met &= met
        rows.append(("berth shim RSS", "%.2f MB" % v, "<= %g MB" % SHIM_TARGET_MB, "yes" if met else "NO"))
    else:
        rows.append(("berth shim RSS", "- (%s)" % notes.get("berth-shim", "not run"),
                     "<= %g MB" % SHIM_TARGET_MB, "NO (not measured)"))
        all_met = False
    # for information, no target
    if "dockerd" in med and "podman" in med:
        rows.append(("(info) podman / dockerd, median", "%.2fx" % (med["podman"] / med["dockerd"]), "-", "-"))
    if "dockerd" in med and "runc" in med:
        rows.append(("(info) dockerd / runc run, median", "%.2fx" % (med["dockerd"] / med["runc"]), "-", "-"))
    if "berth" in med and "runc" in med:
        rows.append(("(info) berth daemon (docker CLI) / runc run, median",
                     "%.3f" % (med["berth"] / med["runc"]), "-", "-"))
    if "berth" in med and "cli-floor" in med:
        rows.append(("(info) berth daemon's share of a docker run, median ms",
                     "%.1f" % (med["berth"] - med["cli-floor"]), "-", "-"))
    if "dockerd" in med and "cli-floor" in med:
        rows.append(("(info) dockerd / docker CLI alone: the most any daemon could reach",
                     "%.2fx" % (med["dockerd"] / med["cli-floor"]), "-", "-"))
    ok = {k for k in mem if k not in notes}
    if {"berth-shim", "containerd-shim"} <= ok and mem["containerd-shim"][0] > 0:
        rows.append(("(info) berth shim / containerd-shim RSS",
                     "%.3f" % (mem["berth-shim"][0] / mem["containerd-shim"][0]), "-", "-"))
    table(rows)
    for k, v in meta:
        print("  %s: %s" % (k, v))
    return 0 if all_met else 3


def main(argv):
    if len(argv) < 2:
        die(__doc__)
    cmds = {"rootfs": cmd_rootfs, "spec": cmd_spec, "find-proc": cmd_find_proc, "mem": cmd_mem,
            "report": cmd_report}
    if argv[1] not in cmds:
        die(__doc__)
    return cmds[argv[1]](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
