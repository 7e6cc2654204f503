# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Output files written whole or not at all.

* :func:`atomic_path`, :func:`atomic_write_json`: one file, under a temporary name
  renamed when complete;
* :func:`temp_name`, :class:`Staged`: several files written under temporary names in
  their folder, then committed together (:meth:`Staged.commit`: the earlier files
  moved aside, the new ones renamed in, the earlier ones deleted; any failure puts the
  earlier files back) or discarded;
* :func:`replace_dir`: a whole folder (an export) written as a temporary sibling, then
  renamed onto its final name, an earlier folder replaced as a whole;
* :func:`fsync_file`, :func:`fsync_dir`: what a rename needs to survive a crash;
* :func:`prepare_output_dir`, :func:`remove_if_empty`: the output folder checked before
  any work, and removed again if a failed run created it and left it empty.
"""
import contextlib
import errno
import json
import os
import shutil
from typing import Dict, Optional


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary name in ``path``'s folder (created if needed) to write the
    file to; when the block completes the file is synced and renamed onto ``path``
    (``os.replace``), so a reader never sees a half-written file, and a failure
    (an object json cannot encode, a full disk, an interrupt) leaves any earlier
    ``path`` as it was and no temporary file behind. A write error names ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = temp_name(path)
    try:
        try:
            yield tmp
        except OSError as e:
            raise write_error(e, path) from e
        fsync_file(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_json(path: str, data, **dump_kwargs) -> str:
    """Write ``data`` as json to ``path`` (parent folders are created), whole or
    not at all (:func:`atomic_path`). ``dump_kwargs`` go to :func:`json.dump`.
    Returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, **dump_kwargs)
    return os.fspath(path)


def write_error(err: OSError, path: str) -> OSError:
    """``err`` as an OSError of the same kind whose message names ``path`` (the final
    name, not the temporary one) and, for a full disk, says so."""
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        reason += " (the disk is full)"
    return type(err)(err.errno, f"Cannot write '{path}': {reason}")


def temp_name(path: str, tag: str = "tmp") -> str:
    """A temporary name for ``path`` in its folder (same file system: ``os.replace``
    is atomic), hidden, with the process id, keeping the extension (OpenCV's video
    writer picks the container from it): ``dir/.tracks.tmp1234.mp4``."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    stem, ext = os.path.splitext(base)
    return os.path.join(directory, f".{stem}.{tag}{os.getpid()}{ext}")


def _remove(path: str):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def fsync_file(path: str, name: Optional[str] = None):
    """Flush ``path``'s data to the disk; if that fails, ``OSError`` naming ``name``
    (the final name of a temporary ``path``), else ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise write_error(e, name or path) from e


def fsync_dir(path: str):
    """Flush a folder's entries (the renames in it) to the disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not sync folders
    finally:
        os.close(fd)


class Staged:
    """Output files of one run, committed together or not at all::

        staged = Staged()
        try:
            video = staged.add("out/tracks.mp4")   # -> the temporary name to write
            js = staged.add("out/results.json")
            ... write both ...
            staged.commit()                        # synced, then renamed in together
        finally:
            staged.discard()                       # no-op after a commit

    :meth:`commit` syncs every temporary file, moves the earlier final files aside,
    renames the new ones in and deletes the earlier ones; if a rename fails, the
    earlier files are put back. :meth:`discard` removes the temporary files: a failure
    at any point leaves the earlier results as they were and no temporary file.
    """

    def __init__(self):
        self.files: Dict[str, str] = {}  # final path -> temporary path
        self.committed = False

    def add(self, final: str) -> str:
        final = os.path.abspath(os.fspath(final))
        self.files[final] = temp_name(final)
        return self.files[final]

    def commit(self):
        for final, tmp in self.files.items():
            if not os.path.isfile(tmp):
                raise FileNotFoundError(f"Cannot commit '{final}': its temporary file '{tmp}' was not written")
            fsync_file(tmp, final)
        aside: Dict[str, str] = {}
        done = []
        try:
            for final in self.files:
                if os.path.lexists(final):
                    aside[final] = temp_name(final, "old")
                    os.replace(final, aside[final])
            for final, tmp in self.files.items():
                os.replace(tmp, final)
                done.append(final)
        except BaseException:
            for final in done:  # put the earlier files back
                _remove(final)
            for final, old in aside.items():
                os.replace(old, final)
            raise
        for old in aside.values():
            _remove(old)
        for directory in {os.path.dirname(f) for f in self.files}:
            fsync_dir(directory)
        self.committed = True

    def discard(self):
        if not self.committed:
            for tmp in self.files.values():
                _remove(tmp)


def replace_dir(tmp_dir: str, final: str, overwrite: bool) -> str:
    """Rename the complete folder ``tmp_dir`` onto ``final`` (its sibling). An existing
    ``final`` is refused (``FileExistsError``) unless ``overwrite``; with it, it is
    replaced as a whole: renamed aside, the new one renamed in, the old one deleted
    (if the second rename fails, the old one is put back). Returns ``final``."""
    final = os.path.abspath(final)
    fsync_dir(tmp_dir)
    old: Optional[str] = None
    if os.path.lexists(final):
        if not overwrite:
            raise FileExistsError(errno.EEXIST, f"Output folder '{final}' exists; pass --overwrite to replace it "
                                                f"as a whole (or choose another --output)")
        old = temp_name(final, "old")
        os.replace(final, old)
    try:
        os.replace(tmp_dir, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    fsync_dir(os.path.dirname(final))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def prepare_output_dir(path: str) -> str:
    """Create the folder ``path`` (and its parents) if needed and check that files can be
    written in it, before any work is done. Returns the topmost folder it created ("" if
    none), for :func:`remove_if_empty`. Raises ``OSError`` naming ``path``."""
    path = os.path.abspath(os.fspath(path))
    created, p = "", path
    while p and not os.path.exists(p):
        created, p = p, os.path.dirname(p)
        if p == created:  # the filesystem root
            break
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"Output folder '{path}' is a file")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        remove_if_empty(path, created)
        raise type(e)(e.errno, f"Cannot write to output folder '{path}': {e.strerror or e}") from e
    return created


def remove_if_empty(path: str, created: str):
    """Remove ``path`` and its parents up to ``created`` (from :func:`prepare_output_dir`)
    where they are empty: a failed run leaves no empty folders behind."""
    if not created:
        return
    path, created = os.path.abspath(path), os.path.abspath(created)
    while True:
        try:
            os.rmdir(path)
        except OSError:
            return
        if path == created:
            return
        path = os.path.dirname(path)
