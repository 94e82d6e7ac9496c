"""Keys and tokens on disk: private from the first byte, refused when exposed.

- :func:`write_private` creates a file with its final mode (0600 for secrets)
  in the ``open`` call itself, never ``chmod``-ed afterwards, so no other user
  can open it in between; :func:`private_dir` makes 0700 folders.
- :func:`check_private` is the reading side, as ssh treats a private key: a key
  or token file of yours that group or others may access is refused, with the
  ``chmod`` that fixes it. A file owned by another user (e.g. ``root:ssl-cert``
  0640, shared with a service's group on purpose) is refused only when every
  user may access it. Refusing rather than warning: a warning scrolls past in a
  server log while the secret stays exposed, and the fix is one command.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_MODE = 0o600
DIR_MODE = 0o700
PUBLIC_MODE = 0o644  # certificates, commands: no secret in them
_POSIX = os.name == "posix"


def private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and missing parents) as a 0700 folder; tighten it if it exists.

    Only for folders that hold nothing but what fedlearn writes there (a kit, a
    run's ``certs/``): an existing one open to group or others is set to 0700.
    """
    folder = Path(path)
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if _POSIX and folder.stat().st_mode & 0o077:
        os.chmod(folder, DIR_MODE)  # a folder we own; its files are created private anyway
    return folder


def write_private(
    path: str | os.PathLike, data: bytes, *, mode: int = SECRET_MODE, replace: bool = False
) -> Path:
    """Write ``data`` to a file created with ``mode``, synced.

    Parameters
    ----------
    path : path-like
        The file. Without ``replace`` it must not exist yet (``O_EXCL``: a file or
        symlink planted there is never written through).
    data : bytes
        The content.
    mode : int
        The file's permissions from its creation on (the umask can only narrow them).
    replace : bool
        Replace an existing file atomically: the data goes to a new private file
        beside it, which is then renamed over it, so readers see the old or the new
        content, never a part.

    Returns
    -------
    Path
        The written file.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}") if replace else target
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def check_private(path: str | os.PathLike, setting: str) -> None:
    """Refuse (one-line ``ValueError``) a secret file that other users may access.

    Parameters
    ----------
    path : path-like
        A key or token file.
    setting : str
        The setting or flag that named it, for the message.
    """
    if not _POSIX:  # no POSIX modes to read (Windows: ACLs)
        return
    st = Path(path).stat()
    exposed = 0o077 if st.st_uid == os.geteuid() else 0o007
    if st.st_mode & exposed:
        raise ValueError(
            f"{setting}={path}: permissions {st.st_mode & 0o777:04o} are too open (other"
            f" users may read this secret); chmod 600 {path}"
        )
