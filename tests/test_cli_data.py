"""``cntk-lab data`` (cntk_core.cli_data): download with a progress bar then the cache, the subset builder
and ``where``, and the one-line errors offline. Fake tarballs (:mod:`cifar_fake`) from ``file://`` URLs."""

from __future__ import annotations

import json
import shutil

from cifar_fake import decoded_folder

from cntk_core.cli import main
from cntk_core.data import load_dataset


def test_cli_data_download_then_cached(fake_cifar10, data_cache, tmp_path, capsys):
    src = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    src.parent.mkdir()
    shutil.copyfile(fake_cifar10.path, src)
    argv = ["data", "download", "--url", src.as_uri(), "--md5", fake_cifar10.md5, "--sha256", fake_cifar10.sha256]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "cifar-10-python.tar.gz" in err and "%" in err  # the progress bar
    assert str(data_cache / "cifar-10-python.tar.gz") in out and "ready: 20 train / 5 test" in out
    assert decoded_folder(data_cache, fake_cifar10).is_dir()
    src.unlink()  # a second run finds it in the cache
    assert main(argv) == 0
    assert main(["data", "download", "--sha256", "0" * 64]) == 2
    assert "--sha256 needs --md5" in capsys.readouterr().err


def test_cli_data_subset_and_where(fake_cifar10, data_cache, tmp_path, capsys, monkeypatch):
    out = tmp_path / "class"
    argv = ["data", "subset", "--from", str(fake_cifar10.path), "--md5", fake_cifar10.md5, "--out", str(out)]
    assert main([*argv, "--n-train", "10", "--n-test", "5"]) == 0
    printed = capsys.readouterr().out
    assert f"export CNTK_CIFAR10_SUBSET={out}" in printed
    monkeypatch.setenv("CNTK_CIFAR10_SUBSET", str(out))
    assert load_dataset("cifar10-subset").x_train.shape == (10, 32, 32, 3)
    assert main(["data", "where", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["cifar10_subset_found"] and status["available"] == ["digits", "cifar10-subset"]
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["datasets_available"] == ["digits", "cifar10-subset"] and info["data_cache_dir"] == str(data_cache)


def test_cli_data_subset_offline_without_tarball_exits_2(data_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNTK_CIFAR10_URL", (tmp_path / "nowhere.tar.gz").as_uri())
    assert main(["data", "subset", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not be downloaded" in err and "CNTK_CIFAR10" in err
    assert main(["data", "subset", "--no-download"]) == 2
    assert "not found" in capsys.readouterr().err
