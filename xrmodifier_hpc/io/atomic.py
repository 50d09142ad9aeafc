"""Writing files so that a crash never leaves a partial one: write beside, then rename.

Every artefact (config, responses, grid shards' companions, checkpoints, emulator, results,
figures) goes through :func:`replacing`; ``store`` keeps its own ``.partial`` names for HDF5
files because resume logic looks for them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def replacing(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder, renamed onto ``path`` when the block succeeds.

    The file gets a new file's usual permissions; it is removed when the block fails.
    ``suffix`` keeps writers that go by the file name (``np.savez``: ``.npz``) happy.

    Parameters
    ----------
    path : str or Path
        The file to write; its folder is created.
    suffix : str
        Ending of the temporary file's name.

    Yields
    ------
    Path
        The temporary file (exists, empty) to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        The file; its folder is created.
    text : str
        The content.

    Returns
    -------
    Path
        ``path``.
    """
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        The file; its folder is created.
    data : bytes
        The content.

    Returns
    -------
    Path
        ``path``.
    """
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
