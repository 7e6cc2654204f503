# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Output files written whole or not at all."""
import contextlib
import json
import os


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary name in ``path``'s folder (created if needed) to write the
    file to; when the block completes the file is synced and renamed onto ``path``
    (``os.replace``), so a reader never sees a half-written file, and a failure
    (an object json cannot encode, a full disk, an interrupt) leaves any earlier
    ``path`` as it was and no temporary file behind."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, data, **dump_kwargs) -> str:
    """Write ``data`` as json to ``path`` (parent folders are created), whole or
    not at all (:func:`atomic_path`). ``dump_kwargs`` go to :func:`json.dump`.
    Returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, **dump_kwargs)
    return os.fspath(path)


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
