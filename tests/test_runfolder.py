"""The run-folder claim shared by the resumable experiments (backdoor, membership)."""

import json

import pytest

from multirobust import runfolder


def test_a_new_folder_is_free_and_an_old_one_needs_resume(tmp_path):
    runfolder.claim(tmp_path / "new", {"a": 1}, kind="backdoor run", resume=False)
    (tmp_path / "config.json").write_text(json.dumps({"a": 1, "workers": 2}))
    with pytest.raises(ValueError, match="already holds a backdoor run: resume it"):
        runfolder.claim(tmp_path, {"a": 1}, kind="backdoor run", resume=False)
    runfolder.claim(tmp_path, {"a": 1, "workers": 4}, kind="x", resume=True, free=["workers"])


def test_resuming_with_other_settings_names_each_change(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"a": 1, "b": "x", "c": 3}))
    with pytest.raises(KeyError, match=r"a: 1 -> 2, b: 'x' -> 'y'"):
        runfolder.claim(tmp_path, {"a": 2, "b": "y", "c": 3, "new": 0}, kind="run",
                        resume=True, error=KeyError)  # fmt: skip
    assert runfolder.changed_settings({"a": 1}, {"a": 1, "added": 5}) == []


def test_an_unreadable_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is unreadable"):
        runfolder.claim(tmp_path, {"a": 1}, kind="run", resume=True)
