"""The command line as a user meets it: exit statuses, one-line errors, get and cite on a built
dataset (the README's demo build is checked in test_readme.py)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from helpers import (
    annex,
    clone,
    git,
    image_file,
    image_ids,
    nv,
    sigint_as_usual,
    write_spec,
)

BAD_SPECS = [
    # (spec text, line, key fragment)
    ("description: no name\n", 1, "name"),
    ("name: x\nmode: sometimes\n", 2, "mode"),
    ("name: x\nmax_images: -3\n", 2, "max_images"),
    ("name: x\nserver: ftp://neurovault.org\n", 2, "server"),
    ("name: x\nimages:\n  terms:\n    map_type: {equals: Z map}\n", 4, "images.terms.map_type"),
    ("name: x\nimages:\n  terms:\n    name: {pattern: '(unclosed'}\n", 4, "images.terms.name"),
    ("name: x\ncollections:\n  ids: [12, abc]\n", 3, "collections.ids"),
    ("name: x\nresample:\n  interpolation: cubic\n", 3, "resample.interpolation"),
    ("name: x\nresample:\n  voxel_size: 0\n", 3, "resample.voxel_size"),
    ("name: x\ncontent: stream\n", 2, "content"),
    ("name: x\nimagez: {}\n", 2, "imagez"),
    ("name: x\nimages:\n  terms:\n    number_of_subjects: {in: 5}\n", 4,
     "images.terms.number_of_subjects"),
    ("name: x\nneurosynth:\n  words: maybe\n", 3, "neurosynth.words"),
    ("name: [unclosed\n", 2, "not valid YAML"),
]


@pytest.mark.parametrize(("text", "line", "key"), BAD_SPECS)
def test_bad_specs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, text, line, key):
    """In-process, to spare a process per case (test_new_user sees one-line errors from a
    process of their own): an escaping exception fails the test as a traceback would."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    target = tmp_path / "out"
    status = nv("build", spec, "-d", target)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert f"spec.yaml:{line}" in err and key in err
    assert not target.exists()


def test_unknown_dataset_version_is_a_clear_error(tmp_path, capsys):
    assert nv("diff", "-d", tmp_path) == 2
    assert "error:" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_emulator_command_serves_until_interrupted():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nv_datalad.cli", "emulator", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_as_usual)
    try:
        for _ in range(100):
            try:
                # not yet listening: retry; listening: wait for the answer (slow under load)
                reply = requests.get(f"http://127.0.0.1:{port}/api/collections/",
                                     timeout=(2, 60))
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert reply.status_code == 200 and reply.json()["count"] > 5
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert f"127.0.0.1:{port}" in err


def test_get_and_cite_on_a_built_dataset(shared_emulator, built, tmp_path, capsys):
    ds = built
    repo = clone(ds, tmp_path / "clone")
    capsys.readouterr()
    assert nv("get", "-d", repo, "--where", "map_type=Z map") == 0
    out = capsys.readouterr().out
    assert "git annex get --metadata" in out
    present = set(annex(repo, "find").split())
    z = set(annex(repo, "find", "--include=*", "--metadata", "map_type=Z map").split())
    assert present == z == {str(image_file(ds, i).relative_to(ds)) for i in image_ids(ds)
                            if shared_emulator.images[i]["map_type"] == "Z map"}
    assert z, "the demo selection has Z maps"
    assert nv("cite", "-d", repo, "--format", "text") == 0
    text = capsys.readouterr().out
    dsid = git(ds, "config", "-f", ".datalad/config", "datalad.dataset.id").strip()
    assert dsid in text and "v1.0.0" in text and git(ds, "rev-parse", "HEAD").strip() in text
    for sc in (ds / "neurovault").glob("collection_*/collection_metadata.json"):
        doi = json.loads(sc.read_text()).get("DOI")
        if doi:
            assert doi in text
    assert nv("cite", "-d", repo, "--format", "bibtex") == 0
    bib = capsys.readouterr().out
    assert bib.startswith("@misc{") and dsid in bib and "v1.0.0" in bib


def test_unreachable_server_exits_2_and_writes_nothing(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = write_spec(tmp_path, f"http://127.0.0.1:{port}")
    assert nv("build", spec, "-d", tmp_path / "ds") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the server" in err and f"127.0.0.1:{port}" in err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("argv, module", [
    (["build", "spec.yaml", "--dry-run"], "nv_datalad.consumers.nimare"),
    (["cite", "-d", "ds"], "nv_datalad.consumers.report"),
    (["--help"], "nv_datalad.emulator.cli"),
])
def test_a_command_does_not_load_what_other_commands_need(argv, module):
    """Every command pays only for its own arguments: defining NiMARE's, the report's or the
    emulator's options imports their modules (~0.3 s at every start)."""
    code = ("import sys, contextlib, io; from nv_datalad import cli\n"
            f"argv = {argv!r}\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    cli.make_parser(cli._wanted(argv)).parse_args(argv)\n"
            f"print({module!r} in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_each_command_still_parses_its_own_options(capsys):
    from nv_datalad.cli import _wanted, make_parser

    argv = ["export", "nimare", "-o", "out.json", "--format", "nimads", "--where", "id>=1"]
    args = make_parser(_wanted(argv)).parse_args(argv)
    assert (args.output, args.format, args.where) == ("out.json", "nimads", ["id>=1"])
    argv = ["report", "-o", "r.html", "--get"]
    assert make_parser(_wanted(argv)).parse_args(argv).get is True
