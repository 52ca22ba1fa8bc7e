import os
import tempfile

# Pipeline manifests and selector history go to a per-run directory, not the user's ~/.cache.
os.environ.setdefault("GPUPORT_CACHE", tempfile.mkdtemp(prefix="gpuport-test-cache-"))
