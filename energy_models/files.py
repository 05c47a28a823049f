"""Files written safely: atomic JSON, writable-folder checks, one-line messages for OS errors, and the
comparison of recorded settings."""

import errno
import json
import os
import pathlib
import uuid

import numpy as np

from energy_models.errors import UserError

# What to do about a failed write, by errno: the one line a user gets instead of a traceback.
_WRITE_ADVICE = {errno.ENOSPC: "free space on that disk or choose another folder",
                 errno.EDQUOT: "free space within your quota or choose another folder",
                 errno.EROFS: "it is on a read-only file system: choose another folder",
                 errno.EACCES: "make it writable or choose another folder",
                 errno.EPERM: "make it writable or choose another folder"}


def write_error(path, error, flag=None):
    """A one-line `UserError` for an `OSError` raised while writing `path` (what failed, what to do,
    and the flag that chooses the folder, when there is one)."""
    reason = error.strerror or str(error).splitlines()[0]
    advice = _WRITE_ADVICE.get(error.errno, "check the folder")
    return UserError(f"cannot write {path} ({reason}); {advice}" + (f" ({flag})" if flag else ""))


def check_writable(path, flag):
    """Checks, before any training, that files can be created in folder `path` (or, when it does not
    exist yet, in its nearest existing parent) by creating and deleting a probe file.

    A probe rather than `os.access`: root passes `os.access` on read-only folders, and a read-only or
    full file system only shows itself when a file is created.

    Raises:
      UserError: one line naming the folder, the reason and `flag`.
    """
    path = pathlib.Path(path).absolute()
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    probe = folder / f".write-test-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "xb") as handle:
            handle.write(b"0" * 4096)  # A full disk may accept an empty file.
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise write_error(folder, error, flag) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def write_json_atomically(path, data):
    """Writes JSON to a temporary file beside `path` and renames it, so a kill never leaves half a file."""
    path = pathlib.Path(path)
    text = json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n"
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise write_error(path, error) from None
    return str(path)


def read_json(path, what, remedy):
    """The JSON object in `path`, or a one-line `UserError` when it is truncated or not an object."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{what} {path} is unreadable ({type(error).__name__}: "
                        f"{str(error).splitlines()[0]}); {remedy}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} holds a JSON {type(data).__name__}, not the settings object it "
                        f"should; {remedy}")
    return data


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def first_difference(old, new, defaults=None, ignore=()):
    """The first setting (sorted by name, ignoring the keys in `ignore`) whose value differs between the
    recorded settings `old` and `new`, as (name, old value, new value), or None. A setting missing from
    `old` counts as its value in `defaults` (a flag added after that run)."""
    new = json.loads(json.dumps(new, default=_jsonable))
    old = {**json.loads(json.dumps(defaults or {}, default=_jsonable)), **old}
    differ = [k for k in sorted(set(old) | set(new)) if k not in ignore and old.get(k) != new.get(k)]
    return (differ[0], old.get(differ[0]), new.get(differ[0])) if differ else None
