"""Artifact bytes: hashing, and SavedModel directories packed as zip archives.

A SavedModel is a directory; the registry stores it as one deterministic zip BLOB so it can be
hashed, verified and unpacked anywhere. Unpacking refuses members that would escape the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from sqlml.errors import ArtifactError

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_directory(directory: Path) -> bytes:
    """Zip a directory with sorted names and fixed timestamps, so equal trees hash equally."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def unpack_archive(data: bytes, model: str) -> Path:
    """Unpack a zip artifact into a fresh folder (kept for the process, keyed by content)."""
    target = Path(tempfile.gettempdir()) / "sqlml-artifacts" / sha256(data)
    if target.is_dir():
        return target
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ArtifactError(f"model {model}: artifact is not a valid SavedModel archive") from None
    staging = Path(tempfile.mkdtemp(prefix="sqlml-unpack-"))
    with archive:
        for member in archive.infolist():
            relative = PurePosixPath(member.filename)
            if relative.is_absolute() or ".." in relative.parts or member.filename.startswith("\\"):
                raise ArtifactError(
                    f"model {model}: archive member {member.filename!r} escapes its folder"
                )
        archive.extractall(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # another process unpacked the same content first
        os.replace(staging, target)
    return target if target.is_dir() else staging
