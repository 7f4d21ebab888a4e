"""Artifact handling: deterministic packing, safe unpacking, corrupt SavedModels refused."""

from __future__ import annotations

import io
import zipfile

import pytest

from sqlml.artifacts import pack_directory, sha256, unpack_archive
from sqlml.errors import ArtifactError


def test_packing_is_deterministic_and_round_trips(tmp_path):
    folder = tmp_path / "model"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.index").write_bytes(b"index")
    first = pack_directory(folder)
    (folder / "saved_model.pb").touch()  # a newer mtime must not change the bytes
    assert pack_directory(folder) == first
    unpacked = unpack_archive(first, "m")
    assert (unpacked / "variables" / "variables.index").read_bytes() == b"index"
    assert unpacked.name == sha256(first)


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/path.txt", "a/../../escape.txt"])
def test_archive_members_cannot_escape_the_folder(tmp_path, member):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("saved_model.pb", b"graph")
        archive.writestr(member, b"payload")
    with pytest.raises(ArtifactError, match="model evil: archive member .* escapes its folder"):
        unpack_archive(buffer.getvalue(), "evil")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_not_a_zip_is_refused():
    with pytest.raises(ArtifactError, match="model m: artifact is not a valid SavedModel archive"):
        unpack_archive(b"definitely not a zip", "m")


def test_corrupt_saved_model_is_refused_at_registration(db, tmp_path):
    pytest.importorskip("tensorflow")
    folder = tmp_path / "broken_savedmodel"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="model broken: not a loadable SavedModel"):
        db.register_model("broken", folder)
    assert db.registry.names() == []
