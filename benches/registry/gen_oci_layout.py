#!/usr/bin/env python3
"""Fallback image generator for the registry benchmark.

Writes an OCI image layout with N layers of random (incompressible) bytes,
each an *uncompressed* tar holding one file, plus an image config, a manifest,
index.json (tag as org.opencontainers.image.ref.name) and oci-layout.

Usage: gen_oci_layout.py --out DIR --tag TAG --random-layers N --layer-mb M
Prints "<manifest digest> <manifest size>" on stdout, like berth-fixture.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

CHUNK = 1 << 20


class RandomReader(io.RawIOBase):
    """File-like object yielding `size` random bytes."""

    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        if n is None or n < 0 or n > self.left:
            n = self.left
        self.left -= n
        return os.urandom(n)


class HashingWriter(io.RawIOBase):
    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.f.write(b)
        self.n += len(b)
        return len(b)


def put_blob(blobs, data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return "sha256:" + hexd, len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--random-layers", type=int, default=6)
    ap.add_argument("--layer-mb", type=int, default=55)
    a = ap.parse_args()

    blobs = os.path.join(a.out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    layers = []
    for i in range(a.random_layers):
        tmp = os.path.join(blobs, ".tmp-layer")
        with open(tmp, "wb") as raw:
            hw = HashingWriter(raw)
            with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT,
                              bufsize=CHUNK) as tar:
                ti = tarfile.TarInfo(name="bench/layer%d.bin" % i)
                ti.size = a.layer_mb * 1024 * 1024
                ti.mode = 0o644
                ti.mtime = 0
                tar.addfile(ti, RandomReader(ti.size))
        hexd = hw.h.hexdigest()
        os.rename(tmp, os.path.join(blobs, hexd))
        layers.append({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": "sha256:" + hexd,
            "size": hw.n,
        })

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
        "history": [{"created_by": "berth registry bench layer %d" % i}
                    for i in range(len(layers))],
    }
    cdig, csize = put_blob(blobs, json.dumps(config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cdig, "size": csize},
        "layers": layers,
    }
    mdig, msize = put_blob(blobs, json.dumps(manifest, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": mdig,
            "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": a.tag},
        }],
    }
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(mdig, msize)


if __name__ == "__main__":
    sys.exit(main())
