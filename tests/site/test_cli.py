"""gpuport.site.cli: argparse subcommands (serve, demo, pyodide) and `python -m gpuport`."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
import types

import gpuport
import pytest
from fake_repo import PACKAGES, make_repo, make_sources
from gpuport.site.cli import build_parser, main
from gpuport.site.distribution import MANIFEST, is_complete


def test_serve_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--models"):
        assert flag in out
    assert "127.0.0.1" in out


def test_serve_defaults_are_loopback_8000():
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.models) == ("127.0.0.1", 8000, None)
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--models", "/m"])
    assert (args.host, args.port, str(args.models)) == ("0.0.0.0", 9000, "/m")


def test_a_subcommand_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "serve" in capsys.readouterr().err


def test_pyodide_dest_on_fakes(tmp_path, capsys):
    root = make_sources(tmp_path / "repo")
    dest = tmp_path / "out" / "pyodide"
    assert main(["pyodide", "--root", str(root), "--dest", str(dest)]) == 0
    assert str(dest) in capsys.readouterr().out
    assert is_complete(dest)
    assert (dest / PACKAGES["numpy"][0]).read_bytes() == PACKAGES["numpy"][2]
    assert (dest / MANIFEST).is_file()


def test_pyodide_tampered_fails_with_a_message(tmp_path, capsys):
    root = make_sources(tmp_path / "repo", tamper="micropip")
    dest = tmp_path / "out"
    assert main(["pyodide", "--root", str(root), "--dest", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and PACKAGES["micropip"][0] in err
    assert not dest.exists()


def test_demo_calls_gpuport_demo_main(monkeypatch):
    calls = []
    fake = types.ModuleType("gpuport.site.demo")
    fake.main = lambda: calls.append("main")
    monkeypatch.setattr(gpuport.site.cli, "demo", fake)
    assert main(["demo"]) == 0
    assert calls == ["main"]


def test_python_dash_m_gpuport():
    done = subprocess.run([sys.executable, "-m", "gpuport", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("serve", "demo", "pyodide"):
        assert command in done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})  # sent verbatim: no `..` normalisation
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_serve_prints_the_url_and_serves(tmp_path):
    root = make_repo(tmp_path / "repo")
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "model.safetensors").write_bytes(bytes(range(100)))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpuport", "serve", "--root", str(root), "--port", str(port),
                             "--models", str(root / "models")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == f"gpuport dev server: http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = _get(port, "/")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the server did not start listening"
                time.sleep(0.1)
        assert status == 200 and body == (root / "web" / "index.html").read_bytes()
        status, headers, body = _get(port, "/models/tiny/model.safetensors", {"Range": "bytes=-10"})
        assert status == 206 and body == bytes(range(90, 100))
        assert headers["content-range"] == "bytes 90-99/100" and headers["content-length"] == "10"
        status, headers, _ = _get(port, "/pyodide/pyodide.asm.wasm")
        assert status == 200 and headers["content-type"] == "application/wasm"
        for path in ("/pyodide/../../secret.txt", "/pyodide/%2e%2e/%2e%2e/secret.txt", "/models/..%2f..%2fsecret.txt",
                     "/models/%2Fetc%2Fpasswd", "/pyodide/", "/../secret.txt"):
            assert _get(port, path)[0] == 404, path
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()
