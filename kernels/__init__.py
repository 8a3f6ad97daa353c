"""Numba kernels the twin calls. Imports nothing of ours: numpy, numba and math only.

numba's on-disk cache (``cache=True``) checks only the file a function is defined in: a kernel that
calls into another file here keeps running its cached copy of the old callee after that file
changes (the fused linear steps in assembly.py ran a stale supernodal factorization this way). So
the cache of this folder is dropped whenever any kernel source changes.
"""

import hashlib
from pathlib import Path


def drop_stale_cache(here: Path) -> bool:
    """Delete numba's cache files in ``here``/__pycache__ unless the sources of ``here`` are those
    they were compiled from. Returns whether it deleted them."""
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))).hexdigest()
    cache = here / "__pycache__"
    stamp = cache / "kernel-sources.sha1"
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    try:
        for f in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
            f.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:   # a read-only install: numba caches elsewhere, and its files do not change
        pass
    return True


drop_stale_cache(Path(__file__).parent)
