"""portal.bootstrap.ensure_system_libraries: the PDF reports' Pango, HarfBuzz and font, installed
with apt-get only when missing and only as root; otherwise a message naming the packages."""

from __future__ import annotations

import ctypes.util

from portal import bootstrap


def _missing_pango(monkeypatch, tmp_path):
    """Pango is missing; the font and apt-get are there (stand-ins, whatever this machine has)."""
    (tmp_path / "font.ttf").write_bytes(b"")
    (tmp_path / "apt-get").write_bytes(b"")
    monkeypatch.setattr(bootstrap, "REPORT_FONT", tmp_path / "font.ttf")
    monkeypatch.setattr(bootstrap, "APT_GET", tmp_path / "apt-get")
    real = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name.startswith("pango") else real(name))


def test_nothing_happens_when_everything_is_there(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bootstrap, "_missing_system_packages", lambda: [])
    monkeypatch.setattr(bootstrap, "_run", lambda *a, **k: calls.append(a) or 0)
    bootstrap.ensure_system_libraries()
    assert calls == []
    assert capsys.readouterr().err == ""


def test_missing_libraries_are_named_for_a_user_who_is_not_root(monkeypatch, capsys, tmp_path):
    _missing_pango(monkeypatch, tmp_path)
    calls = []
    monkeypatch.setattr(bootstrap.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(bootstrap, "_run", lambda *a, **k: calls.append(a) or 0)
    bootstrap.ensure_system_libraries()
    assert calls == []
    err = capsys.readouterr().err
    assert "libpango-1.0-0" in err
    assert "libpangoft2-1.0-0" in err
    assert "sudo apt-get install" in err


def test_root_installs_only_what_is_missing(monkeypatch, tmp_path):
    _missing_pango(monkeypatch, tmp_path)
    calls = []
    monkeypatch.setattr(bootstrap.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bootstrap, "_run", lambda *a, **k: calls.append([str(x) for x in a]) or 0)
    bootstrap.ensure_system_libraries()
    assert calls[0][1] == "update"
    install = calls[1]
    assert install[:2] == [str(tmp_path / "apt-get"), "install"]
    assert {"libpango-1.0-0", "libpangoft2-1.0-0"} <= set(install)
    assert "fonts-dejavu-core" not in install  # the font is there


def test_missing_ocr_libraries_and_fonts_are_named(monkeypatch, tmp_path):
    """OpenCV's libGL (rapidocr-onnxruntime) and the OCR test set's fonts are in the same step."""
    real = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name == "GL" else real(name))
    monkeypatch.setattr(bootstrap, "OCR_FONTS", {tmp_path / "absent.ttf": "fonts-liberation"})
    missing = bootstrap._missing_system_packages()
    assert "libgl1" in missing
    assert "fonts-liberation" in missing
