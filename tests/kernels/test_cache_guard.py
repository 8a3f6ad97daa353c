"""The kernels' numba cache is dropped when any kernel source changes (numba itself only checks the
file a function lives in, so a caller kept a stale copy of a changed callee)."""

from pipetwin.kernels import drop_stale_cache


def test_cache_is_kept_until_a_source_changes(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "a.f-1.py311.nbi").write_bytes(b"index")
    (cache / "a.f-1.py311.1.nbc").write_bytes(b"code")
    (cache / "a.cpython-311.pyc").write_bytes(b"pyc")
    assert drop_stale_cache(tmp_path)            # no stamp yet: unknown sources, dropped
    assert sorted(p.name for p in cache.iterdir()) == ["a.cpython-311.pyc", "kernel-sources.sha1"]
    (cache / "a.f-1.py311.nbi").write_bytes(b"index")
    assert not drop_stale_cache(tmp_path)        # same sources: kept
    assert (cache / "a.f-1.py311.nbi").exists()
    (tmp_path / "b.py").write_text("y = 3\n")    # the callee's file changes
    assert drop_stale_cache(tmp_path)
    assert not (cache / "a.f-1.py311.nbi").exists()
