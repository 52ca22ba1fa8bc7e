"""web/idb.js under Node: the check a stored chunk carries (checkOf: XXH32 with seeds 0 and 1, one pass) equals the
reference algorithm on awkward lengths and unaligned views, and a record read back (withDigest) answers the sha256 it
carries only while its bytes pass the check; a changed byte fails it, and a record without one is hashed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

IDB = (Path(__file__).resolve().parents[2] / "web" / "idb.js").as_uri()
LENGTHS = (0, 1, 3, 4, 15, 16, 17, 31, 33, 64, 1000, (1 << 20) + 7)
P1, P2, P3, P4, P5 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1
M = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & M


def xxh32(data: bytes, seed: int) -> int:
    """XXH32 as its specification writes it (github.com/Cyan4973/xxHash doc/xxhash_spec.md)."""
    n, i = len(data), 0
    if n >= 16:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed & M, (seed - P1) & M]
        while i + 16 <= n:
            for lane in range(4):
                word = int.from_bytes(data[i + 4 * lane:i + 4 * lane + 4], "little")
                v[lane] = (_rotl((v[lane] + word * P2) & M, 13) * P1) & M
            i += 16
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 4 <= n:
        h = (_rotl((h + int.from_bytes(data[i:i + 4], "little") * P3) & M, 17) * P4) & M
        i += 4
    while i < n:
        h = (_rotl((h + data[i] * P5) & M, 11) * P1) & M
        i += 1
    h = ((h ^ (h >> 15)) * P2) & M
    h = ((h ^ (h >> 13)) * P3) & M
    return h ^ (h >> 16)


def _data(n: int) -> bytes:
    return bytes((i * 131 + (i >> 7) * 17 + 5) & 255 for i in range(n))


SCRIPT = """
import { asStored, checkOf, withDigest } from "%s";
const data = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 131 + (i >> 7) * 17 + 5) & 255);
const lengths = %s;
const checks = lengths.map((n) => checkOf(data(n)));
const padded = new Uint8Array(1027); padded.set(data(1024), 3);
const unaligned = checkOf(padded.subarray(3, 1027));   // a view at an odd offset
const bytes = data(5000);
const sha = "%s";
const stored = asStored("chunks", bytes, sha);
const intact = await withDigest(stored);
const flipped = await new Blob([stored]).arrayBuffer().then((b) => { const a = new Uint8Array(b); a[100] ^= 1; return a; });
const corrupt = await withDigest(new Blob([flipped], { type: stored.type }));
const plain = await withDigest(asStored("chunks", bytes));
const elsewhere = await withDigest(new Blob([data(4999)], { type: stored.type }));   // another record's bytes
process.stdout.write(JSON.stringify({ checks, unaligned, type: stored.type, intact: intact.sha256,
  same: Buffer.from(intact.value).equals(Buffer.from(bytes)), corrupt: corrupt.sha256, plain: plain.sha256,
  plainType: asStored("chunks", bytes).type, elsewhere: elsewhere.sha256 }) + "\\n");
"""


def test_the_stored_chunks_check_and_what_a_record_read_back_answers():
    node = shutil.which("node")
    assert node, "node is missing: `make setup` installs the npm tools it needs"
    sha = hashlib.sha256(_data(5000)).hexdigest()
    script = SCRIPT % (IDB, json.dumps(list(LENGTHS)), sha)
    run = subprocess.run([node, "--no-warnings", "--input-type=module", "-e", script], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    want = [f"{xxh32(_data(n), 0):08x}{xxh32(_data(n), 1):08x}" for n in LENGTHS]
    assert got["checks"] == want
    assert xxh32(b"abc", 0) == 0x32D153FF and xxh32(b"", 0) == 0x02CC5D05   # the specification's own values
    assert got["unaligned"] == f"{xxh32(_data(1024), 0):08x}{xxh32(_data(1024), 1):08x}"
    assert got["type"] == (f"application/x-gpuport-chunk; sha256={sha}; "
                           f"check={xxh32(_data(5000), 0):08x}{xxh32(_data(5000), 1):08x}")
    # intact: the digest it carries, its bytes as stored; a flipped bit or another record's bytes: no digest a
    # manifest could hold (the reader drops it and fetches the chunk again); no check carried: hashed
    assert got["intact"] == sha and got["same"]
    assert got["corrupt"] == "check failed" and got["elsewhere"] == "check failed"
    assert got["plain"] == sha and got["plainType"] == ""
