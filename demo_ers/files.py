"""Files the demo makes for itself on first start (its secret key, its signing key)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def made_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content, writing `make()` to it first if it does not exist yet. The content is
    written to a private temporary file and linked into place, so two processes starting at once
    agree on one content and neither ever reads a half-written file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(make())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        os.unlink(temporary)
    return path.read_bytes()
