"""web/idb.js under Node: the check a stored chunk carries (checkOf: XXH32 with seeds 0 and 1, one pass, by the
WebAssembly module pagekernels/check.c builds) equals the reference algorithm on awkward lengths (under one stripe,
odd tails, across the module's 1 MiB window), unaligned views and ArrayBuffers; a record read back (withDigest)
answers the sha256 it carries only while its bytes pass the check (a changed byte or another record's bytes fail it,
a record without one is hashed); and without the module nothing is stored with a check and every record is hashed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"
IDB = (WEB / "idb.js").as_uri()
CHECK_WASM = WEB / "gpuport_simd_check.wasm"
LENGTHS = (0, 1, 3, 4, 15, 16, 17, 31, 33, 64, 1000, 1 << 20, (1 << 20) + 7, (3 << 20) + 21)
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
import { readFileSync } from "node:fs";
import { asStored, checkOf, useCheck, withDigest } from "%s";
const data = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 131 + (i >> 7) * 17 + 5) & 255);
const bytes = data(5000);
const sha = "%s";
// without the module (useCheck(null)): stored without a check, and a record carrying one is hashed
const loadedNone = await useCheck(null);
const none = { check: checkOf(bytes), type: asStored("chunks", bytes, sha).type };
const typed = `application/x-gpuport-chunk; sha256=${sha}; check=0000000000000000`;
none.hashed = (await withDigest(new Blob([bytes], { type: typed }))).sha256;
const loaded = await useCheck(readFileSync("%s"));
const lengths = %s;
const checks = lengths.map((n) => checkOf(data(n)));
const padded = new Uint8Array(1027); padded.set(data(1024), 3);
const unaligned = checkOf(padded.subarray(3, 1027));   // a view at an odd offset
const buffer = checkOf(data(1024).buffer);
const stored = asStored("chunks", bytes, sha);
const intact = await withDigest(stored);
const flipped = new Uint8Array(await new Blob([stored]).arrayBuffer());
flipped[100] ^= 1;
const corrupt = await withDigest(new Blob([flipped], { type: stored.type }));
const plain = await withDigest(asStored("chunks", bytes));
const elsewhere = await withDigest(new Blob([data(4999)], { type: stored.type }));   // another record's bytes
process.stdout.write(JSON.stringify({ loadedNone, none, loaded, checks, unaligned, buffer, type: stored.type,
  intact: intact.sha256, same: Buffer.from(intact.value).equals(Buffer.from(bytes)), corrupt: corrupt.sha256,
  plain: plain.sha256, plainType: asStored("chunks", bytes).type, elsewhere: elsewhere.sha256 }) + "\\n");
"""


def _pair(data: bytes) -> str:
    return f"{xxh32(data, 0):08x}{xxh32(data, 1):08x}"


def test_the_stored_chunks_check_and_what_a_record_read_back_answers():
    node = shutil.which("node")
    assert node, "node is missing: `make setup` installs the npm tools it needs"
    assert CHECK_WASM.is_file(), f"{CHECK_WASM} is missing: `make setup` builds it (pagekernels/check.c)"
    sha = hashlib.sha256(_data(5000)).hexdigest()
    script = SCRIPT % (IDB, sha, CHECK_WASM, json.dumps(list(LENGTHS)))
    run = subprocess.run([node, "--no-warnings", "--input-type=module", "-e", script], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert xxh32(b"abc", 0) == 0x32D153FF and xxh32(b"", 0) == 0x02CC5D05   # the specification's own values
    assert got["loadedNone"] is False and got["none"] == {"check": None, "type": "", "hashed": sha}
    assert got["loaded"] is True
    assert got["checks"] == [_pair(_data(n)) for n in LENGTHS]
    assert got["unaligned"] == got["buffer"] == _pair(_data(1024))
    assert got["type"] == f"application/x-gpuport-chunk; sha256={sha}; check={_pair(_data(5000))}"
    # intact: the digest it carries, its bytes as stored; a flipped bit or another record's bytes: no digest a
    # manifest could hold (the reader drops it and fetches the chunk again); no check carried: hashed
    assert got["intact"] == sha and got["same"]
    assert got["corrupt"] == "check failed" and got["elsewhere"] == "check failed"
    assert got["plain"] == sha and got["plainType"] == ""
