#!/usr/bin/env python3
"""Helpers for benches/registry/run.sh (kept out of bash for clarity).

Subcommands:
  freeport [USED...]             print a free loopback TCP port not in USED
  cpu PID [--tree]               print the process's CPU seconds (utime+stime+cutime+cstime),
                                 with --tree adding its live descendants
  layout-info DIR TAG            print shell assignments describing an OCI layout
  verify-pull SRC TAG OUT TAG    check OUT holds the same manifest and every blob hashes right
  wrk-result KIND BODY FILE [CPU0 CPU1]
                                 turn a wrk output into "value^_note^_detail^_cpu-per-unit"
                                 (note empty if valid)
  report TSV [JSON_OUT]          print the results table (and write JSON if asked)
"""

import hashlib
import json
import os
import re
import socket
import statistics
import sys
import time

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def cmd_freeport(used):
    used = set(int(u) for u in used)
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in used:
            print(port)
            return 0
    die("no free port")


def proc_ticks(pid):
    with open("/proc/%s/stat" % pid) as f:
        stat = f.read()
    # fields after "(comm)": state is field 3, utime 14, stime 15, cutime 16, cstime 17
    rest = stat[stat.rindex(")") + 2:].split()
    return sum(int(rest[i]) for i in (11, 12, 13, 14))


def children(pid):
    kids = []
    for task in os.listdir("/proc/%s/task" % pid):
        try:
            with open("/proc/%s/task/%s/children" % (pid, task)) as f:
                kids += f.read().split()
        except OSError:
            pass
    return kids


def cmd_cpu(pid, tree=None):
    """CPU seconds of PID (with --tree: plus its live descendants, e.g. nginx workers)."""
    ticks = proc_ticks(pid)
    if tree == "--tree":
        todo = children(pid)
        while todo:
            c = todo.pop()
            try:
                ticks += proc_ticks(c)
                todo += children(c)
            except OSError:
                pass
    print("%.3f" % (ticks / os.sysconf("SC_CLK_TCK")))
    return 0


def read_index_manifest(layout, tag):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    descs = index.get("manifests", [])
    pick = None
    for d in descs:
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            pick = d
            break
    if pick is None and len(descs) == 1:
        pick = descs[0]
    if pick is None:
        die("%s: no manifest tagged %r in index.json" % (layout, tag))
    alg, hexd = pick["digest"].split(":", 1)
    mpath = os.path.join(layout, "blobs", alg, hexd)
    with open(mpath, "rb") as f:
        raw = f.read()
    return pick["digest"], mpath, raw


def cmd_layout_info(layout, tag):
    mdigest, mpath, raw = read_index_manifest(layout, tag)
    if "sha256:" + hashlib.sha256(raw).hexdigest() != mdigest:
        die("%s: manifest blob does not match its digest" % layout)
    m = json.loads(raw)
    mt = m.get("mediaType", "")
    if mt not in ("", OCI_MANIFEST, DOCKER_MANIFEST):
        die("%s: top manifest is %s, want an image manifest" % (layout, mt))
    layers = m["layers"]
    for d in [m["config"]] + layers:
        p = os.path.join(layout, "blobs", *d["digest"].split(":", 1))
        if not os.path.isfile(p) or os.path.getsize(p) != d["size"]:
            die("%s: blob %s missing or wrong size" % (layout, d["digest"]))
    big = max(layers, key=lambda d: d["size"])
    print("MANIFEST_DIGEST=%s" % mdigest)
    print("MANIFEST_PATH=%s" % mpath)
    print("MANIFEST_TYPE=%s" % (mt or OCI_MANIFEST))
    print("MANIFEST_SIZE=%d" % len(raw))
    print("LAYER_COUNT=%d" % len(layers))
    print("LAYER_BYTES=%d" % sum(d["size"] for d in layers))
    print("LAYER_TYPES='%s'" % ",".join(sorted(set(d["mediaType"] for d in layers))))
    print("BIG_DIGEST=%s" % big["digest"])
    print("BIG_SIZE=%d" % big["size"])
    print("BIG_PATH=%s" % os.path.join(layout, "blobs", *big["digest"].split(":", 1)))
    return 0


def cmd_verify_pull(src, stag, out, otag):
    sdig, _, _ = read_index_manifest(src, stag)
    odig, _, oraw = read_index_manifest(out, otag)
    if sdig != odig:
        die("pulled manifest %s != pushed manifest %s" % (odig, sdig))
    m = json.loads(oraw)
    n = 0
    for d in [m["config"]] + m["layers"]:
        alg, hexd = d["digest"].split(":", 1)
        p = os.path.join(out, "blobs", alg, hexd)
        if not os.path.isfile(p):
            die("pulled blob %s missing" % d["digest"])
        if os.path.getsize(p) != d["size"]:
            die("pulled blob %s has size %d, manifest says %d"
                % (d["digest"], os.path.getsize(p), d["size"]))
        if sha256_file(p) != hexd:
            die("pulled blob %s does not hash to its digest" % d["digest"])
        n += 1
    print("verified manifest %s and %d blobs" % (odig, n))
    return 0


def cmd_wrk_result(kind, body, path, cpu0="", cpu1=""):
    """value = requests/s (manifest) or MB/s (blob); note says why a run is INVALID;
    eff = server CPU per unit of work (ms per manifest GET, s per GB of blob)."""
    body = int(body)
    with open(path, errors="replace") as f:
        text = f.read()
    m = re.search(r"^WRKRESULT (.*)$", text, re.M)
    if not m:
        last = " ".join(text.strip().splitlines()[-2:])[:200]
        print("\x1fwrk produced no result: %s\x1f" % last)
        return 0
    r = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    secs = r["duration_us"] / 1e6
    if kind == "manifest":
        value = r["requests"] / secs if secs else 0.0
    else:
        value = r["bytes"] / secs / 1e6 if secs else 0.0
    bad = []
    if r["requests"] == 0:
        bad.append("no responses")
    if r["non2xx"] > 0:
        bad.append("%d non-2xx" % r["non2xx"])
    elif r["non2xx"] < 0 and r["status_ge400"] > 0:
        bad.append("%d status>=400" % r["status_ge400"])
    errs = {k: r[k] for k in ("connect", "read", "write", "timeout") if r[k]}
    if errs:
        bad.append("socket errors " + ",".join("%s=%d" % kv for kv in errs.items()))
    # Every complete 2xx response carries the whole body; bytes also include
    # headers and any partial response in flight at the end, so this can only
    # fail if some responses were short (3xx, truncated, wrong object).
    if r["bytes"] < r["requests"] * body:
        bad.append("short responses (%d bytes for %d x %d-byte bodies)"
                   % (r["bytes"], r["requests"], body))
    extra = "req=%d bytes=%d p50_ms=%.2f p99_ms=%.2f" % (
        r["requests"], r["bytes"], r["p50_us"] / 1e3, r["p99_us"] / 1e3)
    eff = ""
    if cpu0 and cpu1:
        cpu = float(cpu1) - float(cpu0)
        extra += " server_cpu_s=%.2f" % cpu
        if kind == "manifest" and r["requests"]:
            eff = "%.6g" % (cpu * 1e3 / r["requests"])
        elif kind == "blob" and r["bytes"]:
            eff = "%.6g" % (cpu / (r["bytes"] / 1e9))
    else:
        extra += " server_cpu_s=? (server gone)"
    # \x1f, not tab: bash's read would merge an empty note into the separators
    print("\x1f".join(["%.6g" % value, "INVALID: " + "; ".join(bad) if bad else "", extra, eff]))
    return 0


# measure key -> (label, baseline system, comparison, target ratio, unit format)
MEASURES = [
    ("cpu_s", "registry CPU s, push+pull", "distribution", "<=", 0.5, "%.2f"),
    ("manifest_rps", "manifest GET/s, 64 conns", "nginx", ">=", 0.3, "%.0f"),
    ("blob_MBps", "blob GET MB/s, 16 conns", "nginx", ">=", 0.9, "%.0f"),
    ("push_s", "skopeo push wall s", "distribution", "<=", 1.0, "%.2f"),
    ("pull_s", "skopeo pull wall s", "distribution", "<=", 1.0, "%.2f"),
    # no target: how much server CPU the GET runs above cost (2 CPUs shared with wrk)
    ("manifest_cpu", "server CPU ms per manifest GET", "nginx", None, None, "%.3f"),
    ("blob_cpu", "server CPU s per GB of blob GETs", "nginx", None, None, "%.2f"),
]
GET_MEASURES = ("manifest_rps", "blob_MBps", "manifest_cpu", "blob_cpu")
SYSTEMS = ["berth", "distribution", "nginx"]


def cmd_report(tsv, json_out=None):
    # rows: measure, system, value ("" if none), note, extra
    data = {}
    meta = {}
    with open(tsv) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            while len(parts) < 5:
                parts.append("")
            key, sysname, value, note, extra = parts[:5]
            if key == "meta":
                meta[sysname] = value
                continue
            e = data.setdefault(key, {}).setdefault(
                sysname, {"values": [], "notes": [], "extra": []})
            if value != "":
                e["values"].append(float(value))
            if note:
                e["notes"].append(note)
            if extra:
                e["extra"].append(extra)

    def summarize(e):
        """median of the values; valid only if there is a value and no note."""
        if e is None:
            return None, False, "not run"
        v = statistics.median(e["values"]) if e["values"] else None
        note = "; ".join(dict.fromkeys(e["notes"]))
        return v, (v is not None and not note), note

    rows = []
    out = {"meta": meta, "measures": {}}
    for key, label, base, cmp_, target, fmt in MEASURES:
        cells = {}
        jm = {"label": label,
              "target": "berth/%s %s %s" % (base, cmp_, target) if cmp_ else None}
        vals = {}
        for s in SYSTEMS:
            e = data.get(key, {}).get(s)
            if s == "nginx" and key not in GET_MEASURES:
                cells[s] = "-"
                continue
            v, ok, note = summarize(e)
            vals[s] = (v, ok)
            if v is None:
                # the cell gets the gist; the full reason goes under "notes:"
                cells[s] = (note or "failed").split(":")[0][:40]
            else:
                cells[s] = fmt % v + ("" if ok else " INVALID")
            jm[s] = {"value": v, "valid": ok, "note": note or None,
                     "runs": e["values"] if e else [],
                     "detail": e["extra"] if e else []}
        bv, bok = vals.get("berth", (None, False))
        dv, dok = vals.get(base, (None, False))
        ratio = None
        if bv is not None and dv:
            ratio = bv / dv
        if cmp_ is None:
            met = "(info)"
        elif ratio is None:
            met = "n/a (no berth figure)" if bv is None else "n/a"
        elif not bok:
            met = "no (invalid run)"
        elif not dok:
            met = "n/a (invalid %s run)" % base
        else:
            met = "yes" if (ratio <= target if cmp_ == "<=" else ratio >= target) else "no"
        jm["ratio"] = ratio
        jm["met"] = met
        out["measures"][key] = jm
        rows.append([label, cells["berth"], cells["distribution"], cells["nginx"],
                     "-" if ratio is None else "%.2f" % ratio,
                     "b/%s %s %.2f" % ("d" if base == "distribution" else "n", cmp_, target)
                     if cmp_ else "-",
                     met])

    head = ["measure", "berth", "distribution", "nginx", "ratio", "target", "met?"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def fmt_row(r):
        return " | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    print(fmt_row(head))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(fmt_row(r))
    # Under a shared, noisy machine the median of each column can come from different
    # moments; the ratio within each round (runs of one round are seconds apart) is steadier.
    print("per-round ratios (berth / baseline, round by round; median):")
    for key, label, base, cmp_, target, fmt in MEASURES:
        if cmp_ is None:
            continue
        bvals = data.get(key, {}).get("berth", {}).get("values", [])
        dvals = data.get(key, {}).get(base, {}).get("values", [])
        ratios = [b / d for b, d in zip(bvals, dvals) if d]
        if ratios:
            out["measures"][key]["round_ratios"] = ratios
            print("  %-32s %s; median %.2f" % (label, " ".join("%.2f" % r for r in ratios),
                                               statistics.median(ratios)))
    notes = []
    for key, label, *_ in MEASURES:
        for s in SYSTEMS:
            e = data.get(key, {}).get(s)
            if e and e["notes"] and any(":" in n for n in e["notes"]):
                notes.append("  %s / %s: %s" % (label, s, "; ".join(dict.fromkeys(e["notes"]))))
    if notes:
        print("notes:")
        print("\n".join(notes))
    if json_out:
        out["generated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(json_out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    failed = [k for k, m in out["measures"].items() if m["met"] not in ("yes", "(info)")]
    return 0 if not failed else 3


def main(argv):
    if len(argv) < 2:
        die(__doc__)
    cmd, args = argv[1], argv[2:]
    fn = {
        "freeport": lambda: cmd_freeport(args),
        "cpu": lambda: cmd_cpu(*args),
        "layout-info": lambda: cmd_layout_info(*args),
        "verify-pull": lambda: cmd_verify_pull(*args),
        "wrk-result": lambda: cmd_wrk_result(*args),
        "report": lambda: cmd_report(*args),
    }.get(cmd)
    if fn is None:
        die(__doc__)
    return fn()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
