"""narro.files.replace_file: a file is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from narro.files import replace_file


def test_a_failed_check_leaves_the_file_and_no_temporary_behind(tmp_path: Path):
    path = tmp_path / "voices.yaml"
    path.write_text("old\n")

    def refuse(written: Path) -> None:
        assert written.read_text() == "new\n"  # the check sees what would be written
        raise ValueError("not valid")

    with pytest.raises(ValueError):
        replace_file(path, "new\n", check=refuse)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["voices.yaml"]


def test_permissions_are_kept_unless_given(tmp_path: Path):
    kept = tmp_path / "lexicon.yaml"
    kept.write_text("a\n")
    kept.chmod(0o640)
    replace_file(kept, "b\n")
    assert kept.read_text() == "b\n" and kept.stat().st_mode & 0o777 == 0o640
    new = tmp_path / "sub" / "new.json"
    replace_file(new, b"{}")
    assert new.read_bytes() == b"{}" and new.stat().st_mode & 0o777 == 0o644
    private = tmp_path / "consent.yaml"
    replace_file(private, "x\n", mode=0o600)
    assert private.stat().st_mode & 0o777 == 0o600
