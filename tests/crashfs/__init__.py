"""A crash-state explorer: what a power cut may leave of the daemon's folders.

SIGKILL keeps everything the kernel already holds; a power cut keeps only what
reached the disk.  In the manner of ALICE (Pillai et al., OSDI'14, "All File
Systems Are Not Created Equal") and SQLite's crash-test VFS:

* :mod:`.recorder` runs the real daemon in-process and records every file-system
  operation it makes under one folder tree (open/create, write, truncate, fsync
  of files and folders, rename, link, unlink, mkdir, rmdir, symlink), with a
  logical model of it (per inode its content, per folder its entries), plus
  markers for the side effects the outside world saw (a poll sent for a task).
* :mod:`.states` builds, for each cut point of that list, the states a POSIX file
  system may legally leave after a power cut there (see its docstring for the
  persistence model), bounded and sampled with a fixed seed.
* :mod:`.checks` judges one state: statically (inputs, outputs, the ledger) and
  after a ``run --once`` of the daemon on a copy of it.
* :mod:`.scenario` is the workload: a few jobs, ``run --once`` in-process against
  the simulator and the S3 emulator, recorded.
* :mod:`.explorer` puts it together; ``tests/test_power_loss.py`` runs a quick
  version, ``bench/crash_states.py`` a wide one.

Test-only code: nothing in ``daemon/`` knows about it.
"""
