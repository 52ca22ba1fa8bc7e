"""What a new user meets first on the command line: --version, help on every option, a busy port."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys

import gpuport
import pytest
from gpuport.site.cli import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"gpuport {gpuport.__version__}"


def test_python_dash_m_version():
    done = subprocess.run([sys.executable, "-m", "gpuport", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"gpuport {gpuport.__version__}"


def _parsers(parser: argparse.ArgumentParser):
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub)


def test_every_subcommand_and_option_has_help():
    missing = []
    for prog, parser in _parsers(build_parser()):
        if not parser.description and prog != "gpuport":
            missing.append(f"{prog}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{prog} {c.dest}: no help" for c in action._choices_actions if not c.help]
            elif not action.help:
                missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not missing, missing


def test_serve_on_a_busy_port_says_to_pass_port(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err, err
