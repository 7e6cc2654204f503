# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Output files written whole or not at all."""
import json
import os


def atomic_write_json(path: str, data, **dump_kwargs) -> str:
    """Write ``data`` as json to ``path`` (parent folders are created).

    The json goes to a temporary name in the same folder first and is renamed
    onto ``path`` when complete (``os.replace``), so a reader never sees a
    half-written file and a failure (an object json cannot encode, a full
    disk, an interrupt) leaves any earlier ``path`` as it was and no temporary
    file behind. ``dump_kwargs`` go to :func:`json.dump`. Returns ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, **dump_kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
