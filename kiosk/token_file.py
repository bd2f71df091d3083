"""The bearer token file of ``[upload] token_file``: read it, or refuse it in one line.

A refusal names the file and the reason, never the content: a token with a line break
would otherwise leak whole into error texts (an HTTP library quotes a header value it
refuses), and from there into the journal, ``kiosk log`` and ``kiosk status``.

Refused: a missing, unreadable or empty file, a directory, one over
:data:`TOKEN_MAX_BYTES`, text that is not UTF-8, a line break or any other control
character inside the token, characters outside Latin-1 (an HTTP header cannot carry
them), and a file its group may write or other users may use at all (``mode & 027``:
0600, 0640, 0400 and 0440 are fine).  Spaces and line ends around the token are
ignored: the final newline an editor adds is normal.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from kiosk.exc import TokenFileError

TOKEN_MAX_BYTES = 4096  #: A longer file is not a token (bytes).
#: Mode bits that make a token file unsafe: group write, and any access by other users.
UNSAFE_MODE_BITS = stat.S_IWGRP | stat.S_IRWXO


class TokenSignature(NamedTuple):
    """What a cheap ``stat`` says of the file: a change means "try the token again"."""

    inode: int
    size: int
    mtime_ns: int
    mode: int


def token_signature(path: str) -> TokenSignature | None:
    """The file's signature (None when it cannot be stat'ed, e.g. it does not exist yet)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return TokenSignature(st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def read_token(path: str) -> str:
    """The bearer token in ``path``; raises :class:`TokenFileError` (one line, never the
    content) when the file is unsafe or the token could not be sent as it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TokenFileError(f"token file {path} does not exist; put the token from the "
                             f"statistics team there (chmod 640, owner root:kiosk)",
                             missing=True) from None
    except PermissionError:
        raise TokenFileError(f"token file {path} is not readable by this user; "
                             f"chown root:kiosk {path} && chmod 640 {path}",
                             unreadable=True) from None
    except OSError as e:
        raise TokenFileError(f"token file {path} cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise TokenFileError(f"token file {path} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"token file {path} is not a regular file")
        unsafe = st.st_mode & UNSAFE_MODE_BITS
        if unsafe:
            who = ("readable by every user" if unsafe & stat.S_IROTH else
                   "usable by every user" if unsafe & stat.S_IRWXO else "writable by its group")
            raise TokenFileError(
                f"token file {path} is {who} (mode {stat.S_IMODE(st.st_mode):04o}); refusing to "
                f"use it: chmod g-w,o-rwx {path} (0640 or 0600)")
        raw = os.read(fd, TOKEN_MAX_BYTES + 1)
    except TokenFileError:
        raise
    except OSError as e:
        raise TokenFileError(f"token file {path} cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(raw) > TOKEN_MAX_BYTES:
        raise TokenFileError(f"token file {path} holds more than {TOKEN_MAX_BYTES} bytes: "
                             f"is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenFileError(f"token file {path} is not UTF-8 text") from None
    token = text.strip(" \t\r\n")
    return check_token(token, path)


def check_token(token: str, path: str) -> str:
    """``token`` if an HTTP header can carry it as it is; else :class:`TokenFileError`."""
    if not token:
        raise TokenFileError(f"token file {path} is empty; put the token from the statistics "
                             f"team there")
    if "\n" in token or "\r" in token:
        raise TokenFileError(f"token file {path} has a line break inside the token (one line "
                             f"only; a final newline is fine); refusing it")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in token):
        raise TokenFileError(f"token file {path} holds control characters (a tab, an escape…) "
                             f"inside the token; refusing it")
    if any(ord(c) > 0xFF for c in token):
        raise TokenFileError(f"token file {path} holds characters an HTTP header cannot carry "
                             f"(outside Latin-1); refusing it")
    return token
