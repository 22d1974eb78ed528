"""Atomic outputs: complete files appear under their name, failures and Ctrl-C leave nothing behind."""

from __future__ import annotations

import signal

import pytest

from geoseg.atomic import atomic_output, check_output_path
from geoseg.cli.main import Terminated
from geoseg.errors import OutputError


def test_output_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.tif"
    with atomic_output(target) as tmp:
        tmp.write_text("data")
        assert not target.exists()
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".tif"
    assert target.read_text() == "data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt(), Terminated(signal.SIGTERM)])
def test_failure_or_interrupt_removes_the_temporary_file_and_keeps_the_old_output(tmp_path, failure):
    target = tmp_path / "out.tif"
    target.write_text("old")
    with pytest.raises(type(failure)), atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("half")
        (tmp.parent / (tmp.name + ".aux.xml")).write_text("sidecar")
        raise failure
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_existing_output_without_overwrite_and_missing_folder_are_refused(tmp_path):
    (tmp_path / "out.tif").write_text("x")
    with pytest.raises(OutputError, match="output exists; pass overwrite=True"):
        check_output_path(tmp_path / "out.tif", overwrite=False)
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "out.tif", overwrite=False)
    with pytest.raises(OutputError, match="is a directory"):
        check_output_path(tmp_path, overwrite=True)


def test_an_output_under_a_file_says_the_folder_is_a_file(tmp_path):
    (tmp_path / "scene.tif").write_text("x")
    with pytest.raises(OutputError, match=r"folder .*scene\.tif is a file, not a folder"):
        check_output_path(tmp_path / "scene.tif" / "out.tif", overwrite=False)


def test_outputs_get_the_usual_permissions_even_when_the_writer_made_a_private_file(tmp_path):
    import os

    target = tmp_path / "model.safetensors"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"x")
        os.chmod(tmp, 0o600)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_output_that_is_one_of_the_inputs_is_refused_even_with_overwrite(tmp_path):
    source = tmp_path / "classes.tif"
    source.write_bytes(b"input")
    (tmp_path / "alias.tif").symlink_to(source)
    for name in (source, tmp_path / "alias.tif", tmp_path / "." / "classes.tif"):
        with pytest.raises(OutputError, match="is also an input of this command"):
            check_output_path(name, overwrite=True, inputs=[tmp_path / "other.tif", source])
    assert source.read_bytes() == b"input"
    assert check_output_path(tmp_path / "new.tif", overwrite=True, inputs=[source]) == tmp_path / "new.tif"


def test_many_scenes_into_one_folder_probe_it_once(tmp_path, monkeypatch):
    import geoseg.atomic
    from geoseg.inference.outputs import prepare_outputs

    probed = []
    real_probe = geoseg.atomic.cannot_create_in
    monkeypatch.setattr(
        geoseg.atomic, "cannot_create_in", lambda folder: probed.append(folder) or real_probe(folder)
    )
    inputs = [str(tmp_path / f"scene{i}.tif") for i in range(50)]
    plans = prepare_outputs(inputs, tmp_path / "out", confidence=True, quicklook=True)
    (tmp_path / "out").mkdir()
    prepare_outputs(inputs, tmp_path / "out", confidence=True, quicklook=True, vectorize="gpkg")

    assert len(plans) == 50
    assert probed == [tmp_path, tmp_path / "out"]  # the new folder's parent, then the folder: once each
