"""The replay flow as a bytewax cluster of two real processes on loopback (``-i 0/1 -a``): the
combined historian equals a single-process run's after de-duplication.

Each process runs in its own working folder with a relative historian root, so every file on
disk says which process wrote it (as on two machines with their own disks; ``stored`` reads the
roots together). The flow keys every stateful step by network and ``build_flow`` takes one
network, so today the whole keyed pipeline runs on the worker its key hashes to, and each
historian sink (one partition per kind) on one worker: the cluster must still agree with the
single process, which is what this checks."""

from __future__ import annotations

import os
import signal
import socket
import time

from pipetwin.flows.sinks.historian import written_files
from tests.flows.test_recovery import (KINDS_STORED, assert_duplicates_are_redeliveries, assert_same_history,
                                       bytewax_run, clean_root, flow_spec, history_path)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_processes_store_what_one_process_stores(tmp_path, tmp_path_factory):
    t_start = time.monotonic()
    history = history_path(tmp_path_factory)
    clean = clean_root(tmp_path_factory)
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    spec = flow_spec(history, "historian")            # relative: under each process's own folder
    folders = [tmp_path / f"proc{i}" for i in range(2)]
    procs = []
    for i, folder in enumerate(folders):
        folder.mkdir()
        procs.append(bytewax_run(spec, "-i", str(i), "-a", addresses, log=folder / "bytewax.log", cwd=folder))
    # reap with wait4 to see each process's CPU time (which one hosted the twin), reported below
    cpu_s, pending = [0.0, 0.0], {proc.pid: i for i, proc in enumerate(procs)}
    deadline = time.monotonic() + 50
    try:
        while pending and time.monotonic() < deadline:
            for pid, i in list(pending.items()):
                done, status, usage = os.wait4(pid, os.WNOHANG)
                if done:
                    del pending[pid]
                    cpu_s[i] = usage.ru_utime + usage.ru_stime
                    procs[i].returncode = os.waitstatus_to_exitcode(status)
                    log = (folders[i] / "bytewax.log").read_text()
                    assert procs[i].returncode == 0, f"process {i} failed:\n{log[-3000:]}"
            time.sleep(0.05)
        assert not pending, f"processes {sorted(pending.values())} did not finish in 50 s"
    finally:                          # one failed: stop the other, which would wait for it for ever
        for pid, i in pending.items():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            procs[i].returncode = -signal.SIGKILL
    roots = [folder / "historian" for folder in folders]
    files = [len(list(written_files(root))) for root in roots]
    assert sum(files) > 0
    counts = assert_same_history(roots, clean)
    duplicates = assert_duplicates_are_redeliveries(roots)
    assert duplicates == {kind: 0 for kind in KINDS_STORED}, duplicates
    print(f"\nhistorian files per process {files}; CPU s per process {[round(c, 1) for c in cpu_s]}; "
          f"stored {counts}; {time.monotonic() - t_start:.1f} s")
