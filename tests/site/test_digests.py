"""web/digests.js under Node: SHA-256 on a hashing thread (its worker script served over a MessagePort) equals
hashing here, leaves the caller's bytes as they were, keeps small arrays here, and falls back to hashing here when
that thread answers an error or nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

DIGESTS = (Path(__file__).resolve().parents[2] / "web" / "digests.js").as_uri()

SCRIPT = """
import { WORKER_SOURCE, hashed, sha256, use } from "%s";
const big = Uint8Array.from({ length: (3 << 20) + 5 }, (_, i) => (i * 7 + (i >> 11)) & 255);
const view = big.subarray(5, (1 << 20) + 17);   // only the view's bytes are hashed
const small = new Uint8Array([1, 2, 3]);
const out = { here: await sha256([big, view, small]), counts: [hashed()] };

const { port1, port2 } = new MessageChannel();
new Function("self", WORKER_SOURCE)(port1);   // the worker's own script, its `self` a port
use(port2);
out.elsewhere = await sha256([big, view]);
out.counts.push(hashed());
out.small = await sha256([small]);
out.counts.push(hashed());
out.intact = [big.byteLength, view.byteLength, view.byteOffset, big[12345], small.length];

const failing = new MessageChannel();
failing.port1.onmessage = ({ data }) => failing.port1.postMessage({ id: data.id, error: "no hashing here" });
use(failing.port2);
out.afterError = await sha256([big]);
out.counts.push(hashed());

const silent = new MessageChannel();
silent.port1.onmessage = () => {};
use(silent.port2);
const t0 = performance.now();
out.afterSilence = await sha256([big]);
out.waitedMs = performance.now() - t0;
out.counts.push(hashed());
use(null);
for (const port of [port1, port2, failing.port1, failing.port2, silent.port1, silent.port2]) port.close();
process.stdout.write(JSON.stringify(out) + "\\n");
""" % DIGESTS


def test_a_hashing_thread_gives_the_same_digests_and_hashing_falls_back_here():
    node = shutil.which("node")
    assert node, "node is missing: `make setup` installs the npm tools it needs"
    run = subprocess.run([node, "--no-warnings", "--input-type=module", "-e", SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    big = bytes((i * 7 + (i >> 11)) & 255 for i in range((3 << 20) + 5))
    want = [hashlib.sha256(b).hexdigest() for b in (big, big[5:(1 << 20) + 17], bytes([1, 2, 3]))]
    assert got["here"] == want
    assert got["elsewhere"] == want[:2] and got["small"] == want[2:]
    # where each ran: 3 here; the two large on the thread; the small one here (the round trip costs more)
    assert [c["elsewhere"] for c in got["counts"]] == [0, 2, 2, 2, 2], got["counts"]
    assert [c["here"] for c in got["counts"]] == [3, 3, 4, 5, 6], got["counts"]
    # the caller's arrays went over as copies: not detached, not moved
    assert got["intact"] == [(3 << 20) + 5, (1 << 20) + 12, 5, big[12345], 3]
    assert got["afterError"] == want[:1] and got["afterSilence"] == want[:1]
    # a thread that says nothing is given up after its deadline (2 s and 50 ms a MiB), not waited on for ever
    assert 2000 <= got["waitedMs"] < 10000, got["waitedMs"]
