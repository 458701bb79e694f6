"""The git-annex layer (``nv_datalad.dataset.annex``) on a tiny repository with one collection
subdataset, against the emulator's bench corpus (volumes of a few hundred bytes).

git-annex itself is the oracle: the key ``addurl --relaxed`` makes, what ``whereis``,
``metadata`` and ``find`` report afterwards, and the bytes ``get`` brings back from the web.
These tests also serve ``tools/mutation.py annex`` (each mutant runs only this file).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import annex, git

from nv_datalad.dataset.annex import (
    WEB_UUID,
    AddResult,
    Annex,
    Batches,
    configure_loopback,
    discard,
    loopback_ips,
    metadata_line,
    url_key,
)
from nv_datalad.errors import AnnexError

SUB = "neurovault/collection_2"


@dataclass(frozen=True)
class Repos:
    root: Path  # the dataset; neurovault/collection_1 lives in it
    sub: Path  # neurovault/collection_2: a subdataset


def _init(path: Path, name: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    annex(path, "init", "-q", name)
    git(path, "config", "annex.security.allowed-ip-addresses", "127.0.0.1")
    git(path, "commit", "-q", "--allow-empty", "-m", "start")


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> Repos:
    root = tmp_path_factory.mktemp("annex") / "ds"
    _init(root, "ds")
    _init(root / SUB, "sub")
    return Repos(root, root / SUB)


@pytest.fixture(scope="module")
def emu():
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="bench", port=0, n_images=4, tiny=True) as e:
        yield e


def _journal_empty(repo: Path) -> bool:
    """Nothing of git-annex's waits outside the git-annex branch (a clone would miss it)."""
    journal = repo / ".git/annex/journal"
    return not journal.is_dir() or not any(journal.iterdir())


def _web_urls(repo: Path, rel: str) -> list[str]:
    """The web URLs git-annex knows for ``rel`` (whereis exits 1 when no copy is known)."""
    out = subprocess.run(["git", "-C", str(repo), "annex", "whereis", "--json", rel],
                         capture_output=True, text=True).stdout
    (reply,) = [json.loads(line) for line in out.splitlines()]
    return [u for w in reply["whereis"] if w["uuid"] == WEB_UUID for u in w["urls"]]


# -- pure functions ----------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "target", "line"), [
    ({"a": 1, "b": None, "c": "", "d": "é"}, {"file": "x.nii"},
     '{"file": "x.nii", "fields": {"a": ["1"], "b": [], "c": [], "d": ["é"]}}'),
    ({"id": 0}, {"key": "K--1"}, '{"key": "K--1", "fields": {"id": ["0"]}}'),
])
def test_a_metadata_line_sets_every_field_and_unsets_empty_ones(fields, target, line):
    assert metadata_line(fields, **target) == line


@pytest.mark.parametrize(("host", "ips"), [
    ("localhost", ["127.0.0.1", "::1"]), ("127.0.0.1", ["127.0.0.1"]),
    ("127.9.0.1", ["127.9.0.1"]), ("[::1]", ["::1"]), ("::1", ["::1"]),
    ("10.0.0.1", []), ("neurovault.org", []), ("", []),
])
def test_loopback_hosts_are_the_only_ones_allowed(host, ips):
    assert loopback_ips(host) == ips
    assert loopback_ips("".join(list(host))) == ips  # as read from a URL: not interned


def test_an_add_result_is_ok_only_with_a_key_and_no_error():
    assert AddResult("p", "u", "K").ok
    assert not AddResult("p", "u", None).ok
    assert not AddResult("p", "u", "K", "refused").ok


URLS = [
    "http://127.0.0.1:9/media/images/1/tstat1.nii.gz",
    "http://127.0.0.1:9/media/a,b+c~d%20e.nii.gz",  # no space: the batch splits there
    "http://127.0.0.1:9/m\u00e9di\u00e5/x?y=1&z=2",
    "http://127.0.0.1:9/media/images/12/" + "a" * 22 + ".nii.gz",  # 64 bytes: kept whole
    "http://127.0.0.1:9/media/images/12/" + "a" * 23 + ".nii.gz",  # 65 bytes: hashed
    "http://127.0.0.1:9/media/images/123/" + "é" * 20 + ".nii.gz",
]


def test_url_keys_are_the_keys_git_annex_makes_for_the_url(tmp_path):
    _init(tmp_path, "keys")
    assert [len(u.encode()) for u in URLS[3:5]] == [64, 65]
    names = [f"f{n}" for n in range(len(URLS))]
    annex(tmp_path, "addurl", "--relaxed", "--raw", "--batch", "--with-files",  # no request
          input="".join(f"{url} {name}\n" for url, name in zip(URLS, names, strict=True)))
    made = annex(tmp_path, "lookupkey", "--batch", input="".join(f"{n}\n" for n in names))
    assert [url_key(url, None) for url in URLS] == made.split()
    assert [url_key(url, 4096) for url in URLS] == [
        k.replace("VURL--", "VURL-s4096--", 1) for k in made.split()]


# -- registering URLs --------------------------------------------------------------------------

def test_urls_are_registered_in_the_repository_that_holds_each_path(repos, emu):
    a, b, c = sorted(emu.images)[:3]
    items = [(emu.images[a]["file"], "neurovault/collection_1/image_1.nii.gz",
              len(emu.image_bytes(a))),
             (emu.images[b]["file"], f"{SUB}/image_2.nii.gz", len(emu.image_bytes(b))),
             (emu.images[c]["file"], f"{SUB}/image_3.nii.gz", None)]
    progress: list[int] = []
    fields = {f"{SUB}/image_2.nii.gz": {"map_type": "T map", "modality": None}}
    got = Annex(repos.root).addurls(items, on_reply=progress.append, metadata=fields)
    assert _journal_empty(repos.root) and _journal_empty(repos.sub)
    web_log = git(repos.sub, "ls-tree", "-r", "--name-only", "git-annex").split()
    assert sum(name.endswith(".log.web") for name in web_log) == 2
    assert [(r.path, r.url, r.error) for r in got] == [(p, u, "") for u, p, _ in items]
    assert [r.key for r in got] == [url_key(u, s) for u, _, s in items]
    assert [r.metadata_error for r in got] == ["", "", ""]
    assert annex(repos.sub, "metadata", "--get", "map_type", "image_2.nii.gz").strip() == "T map"
    assert annex(repos.sub, "metadata", "--get", "map_type", "image_3.nii.gz").strip() == ""
    # counted across the repositories, which answer in either order (1 here, 2 in SUB)
    assert progress[-1] == 3 and progress == sorted(set(progress))  # strictly increasing
    assert progress[0] in (1, 2)
    assert _web_urls(repos.root, "neurovault/collection_1/image_1.nii.gz") == [items[0][0]]
    assert _web_urls(repos.sub, "image_2.nii.gz") == [items[1][0]]
    assert (repos.root / f"{SUB}/image_2.nii.gz").is_symlink()
    annex(repos.sub, "get", "-q", "image_2.nii.gz", "image_3.nii.gz")  # from the web
    assert (repos.sub / "image_2.nii.gz").read_bytes() == emu.image_bytes(b)
    assert (repos.sub / "image_3.nii.gz").read_bytes() == emu.image_bytes(c)
    assert Annex(repos.root).addurls([]) == []


def test_a_leftover_in_the_way_is_discarded_and_the_url_registered_again(repos, emu):
    a = sorted(emu.images)[0]
    url, rel = emu.images[a]["file"], f"{SUB}/image_9.nii.gz"
    (repos.root / rel).write_bytes(b"a killed build's half download")
    git(repos.sub, "add", "image_9.nii.gz")
    (got,) = Annex(repos.root).addurls([(url, rel, None)])
    assert got.ok and got.key == url_key(url, None)
    assert (repos.root / rel).is_symlink()
    assert git(repos.sub, "diff", "--cached", "--name-status", "--", "image_9.nii.gz"
               ).split() == ["A", "image_9.nii.gz"]
    assert annex(repos.sub, "lookupkey", "image_9.nii.gz").strip() == got.key


def test_a_stalled_git_annex_fails_every_pending_item_and_says_so(repos):
    """A watchdog shorter than git-annex's start-up: every line of each batch is unanswered."""
    items = [(f"http://127.0.0.1:9/media/s{n}.nii.gz", f"{SUB}/s{n}.nii.gz", None)
             for n in range(2)]
    got = Annex(repos.root, stall_timeout=0.001).addurls(items)
    assert [(r.ok, r.key) for r in got] == [(False, None), (False, None)]
    assert all(r.error == "git annex registerurl stalled: no progress for 0 s" for r in got)
    errors = Annex(repos.root, stall_timeout=0.001).set_metadata([(f"{SUB}/s0.nii.gz", {})])
    assert errors == {f"{SUB}/s0.nii.gz": "git annex metadata stalled: no progress for 0 s"}
    dropped = Annex(repos.root, stall_timeout=0.001).drop([f"{SUB}/s0.nii.gz"])
    assert dropped == {f"{SUB}/s0.nii.gz": "git annex drop stalled: no progress for 0 s"}


def test_a_path_under_a_file_is_reported_not_raised(repos):
    (repos.root / "plain.txt").write_text("in the way")
    (got,) = Annex(repos.root).addurls([("http://127.0.0.1:9/x.nii", "plain.txt/x.nii", None)])
    assert not got.ok and got.error


@pytest.mark.parametrize("bad", [("http://h/a\nb", "p"), ("http://h/a", "p\rq")])
def test_a_line_break_is_refused_before_any_process(repos, bad):
    with pytest.raises(AnnexError, match="refusing a URL or path with a line break"):
        Annex(repos.root).addurls([(*bad, None)])


# -- metadata, keys, drop, urls, copies ------------------------------------------------------

def _annexed(repo: Path, rel: str, data: bytes) -> str:
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo / rel).write_bytes(data)
    annex(repo, "add", "-q", rel)
    return annex(repo, "lookupkey", rel).strip()


def _fields(repo: Path, rel: str) -> dict[str, list[str]]:
    reply = json.loads(annex(repo, "metadata", "--json", rel))
    return {k: v for k, v in reply["fields"].items() if not k.endswith("lastchanged")}


def test_metadata_is_set_per_file_in_each_repository(repos):
    top = "neurovault/collection_1/m.nii"
    _annexed(repos.root, top, b"top")
    _annexed(repos.sub, "m.nii", b"sub")
    a = Annex(repos.root)
    assert a.set_metadata([(top, {"id": 1, "name": "one"}),
                           (f"{SUB}/m.nii", {"id": 2})]) == {}
    assert _fields(repos.root, top) == {"id": ["1"], "name": ["one"]}
    assert _fields(repos.sub, "m.nii") == {"id": ["2"]}
    assert a.set_metadata([(top, {"id": 7, "name": None})]) == {}  # replaced, and unset
    assert _fields(repos.root, top) == {"id": ["7"]}
    errors = a.set_metadata([("neurovault/collection_1/none.nii", {"id": 3}),
                             (f"{SUB}/none.nii", {"id": 4})])
    assert sorted(errors) == ["neurovault/collection_1/none.nii", f"{SUB}/none.nii"]
    assert all(errors.values())


def test_keys_are_looked_up_per_repository_and_unannexed_paths_left_out(repos):
    k1 = _annexed(repos.root, "neurovault/collection_1/k.nii", b"k1")
    k2 = _annexed(repos.sub, "k.nii", b"k2")
    (repos.root / "loose.txt").write_text("not annexed")
    got = Annex(repos.root).lookup_keys(["neurovault/collection_1/k.nii", f"{SUB}/k.nii",
                                         "loose.txt"])
    assert got == {"neurovault/collection_1/k.nii": k1, f"{SUB}/k.nii": k2}
    assert Annex(repos.root).lookup_keys([]) == {}
    # a repository whose answer cannot be matched to its paths is left out, not the others
    got = Annex(repos.root).lookup_keys(["neurovault/collection_1/k\nx.nii", f"{SUB}/k.nii"])
    assert got == {f"{SUB}/k.nii": k2}


def test_drop_keeps_what_only_exists_here_and_drops_what_the_web_has(repos, emu):
    a = sorted(emu.images)[1]
    rel = f"{SUB}/image_20.nii.gz"
    Annex(repos.root).addurls([(emu.images[a]["file"], rel, None)])
    annex(repos.sub, "get", "-q", "image_20.nii.gz")
    only_here = "neurovault/collection_1/only.nii"
    _annexed(repos.root, only_here, b"only here")
    errors = Annex(repos.root).drop([rel, only_here])
    assert list(errors) == [only_here] and errors[only_here]
    assert annex(repos.sub, "find", "--in=here", "image_20.nii.gz") == ""
    assert annex(repos.root, "find", "--in=here", only_here).strip() == only_here
    assert Annex(repos.root).drop([]) == {}


def test_unregistered_urls_are_no_longer_claimed_by_their_keys(repos, emu):
    a, b = sorted(emu.images)[2:4]
    items = [(emu.images[a]["file"], "neurovault/collection_1/u.nii.gz", None),
             (emu.images[b]["file"], f"{SUB}/u.nii.gz", None)]
    got = Annex(repos.root).addurls(items)
    Annex(repos.root).unregister_urls([(r.path, r.key or "", r.url) for r in got])
    assert _web_urls(repos.root, "neurovault/collection_1/u.nii.gz") == []
    assert _web_urls(repos.sub, "u.nii.gz") == []
    Annex(repos.root).unregister_urls([])  # nothing to do, no process


def test_keys_are_copied_to_a_remote_and_failures_named(repos, tmp_path):
    backup = tmp_path / "backup"
    git(tmp_path, "clone", "-q", str(repos.sub), str(backup))
    annex(backup, "init", "-q", "backup")
    git(repos.sub, "remote", "add", "backup", str(backup))
    key = _annexed(repos.sub, "c.nii", b"copy me")
    missing = "SHA256E-s1--" + "0" * 64 + ".nii"
    errors = Annex(repos.root).copy_keys_to(repos.sub, "backup", [key, missing])
    assert list(errors) == [missing] and errors[missing]
    assert annex(repos.sub, "find", "--in=backup", "c.nii").strip() == "c.nii"
    assert Annex(repos.root).copy_keys_to(repos.sub, "backup", []) == {}


def test_discard_takes_a_file_out_of_the_index_and_the_work_tree(repos):
    for rel, repo, inner in (("neurovault/collection_1/d.nii", repos.root,
                              "neurovault/collection_1/d.nii"),
                             (f"{SUB}/d.nii", repos.sub, "d.nii")):
        _annexed(repo, inner, b"half")
        discard(repos.root, rel)
        assert not os.path.lexists(repos.root / rel)
        assert git(repo, "ls-files", "--", inner) == ""
    discard(repos.root, "neurovault/collection_1/never.nii")  # nothing there: no error


def test_batches_answer_from_the_repository_of_each_path_and_close(repos):
    for repo, inner in ((repos.root, "neurovault/collection_1/b.nii"), (repos.sub, "b.nii")):
        (repo / inner).parent.mkdir(parents=True, exist_ok=True)
        (repo / inner).write_bytes(f"batch {inner}".encode())
    with Annex(repos.root).batches() as batches:
        top = batches.ask("add", "neurovault/collection_1/b.nii")
        sub = batches.ask("add", f"{SUB}/b.nii")
        meta = batches.ask("metadata", f"{SUB}/b.nii", metadata_line({"id": 5}, key=sub["key"]))
    assert top["success"] and top["file"] == "neurovault/collection_1/b.nii"
    assert top["key"] == annex(repos.root, "lookupkey", "neurovault/collection_1/b.nii").strip()
    assert sub["success"] and sub["file"] == "b.nii"
    assert sub["key"] == annex(repos.sub, "lookupkey", "b.nii").strip()
    assert meta["success"] and _fields(repos.sub, "b.nii") == {"id": ["5"]}
    assert _journal_empty(repos.root) and _journal_empty(repos.sub)


def _merges(caplog) -> int:
    """How many ``git annex merge`` (the fallback commit of the journal) the runner started."""
    return sum("git annex merge" in m for m in caplog.messages)


def test_only_add_commits_and_it_exits_after_the_others(repos, caplog):
    """registerurl and metadata leave their logs in the journal; add, closed last, commits
    them with its own: what a clone sees is on the git-annex branch."""
    (repos.sub / "c.nii").write_bytes(b"committed once")
    url = "http://127.0.0.1:9/c.nii"
    before = git(repos.sub, "rev-list", "--count", "git-annex").strip()
    with caplog.at_level(logging.DEBUG, logger="nv_datalad.dataset.runner"), \
            Annex(repos.root).batches() as batches:
        key = batches.ask("add", f"{SUB}/c.nii")["key"]
        batches.send("registerurl", f"{SUB}/c.nii", f"{key} {url}", tag="0")
        batches.send("metadata", f"{SUB}/c.nii", metadata_line({"id": 7}, key=key), tag="0")
    assert batches.failed == [] and _journal_empty(repos.sub) and _merges(caplog) == 0
    assert int(git(repos.sub, "rev-list", "--count", "git-annex")) == int(before) + 1
    branch = git(repos.sub, "ls-tree", "-r", "--name-only", "git-annex").split()
    assert any(n.endswith(".log.web") for n in branch)
    assert any(n.endswith(".log.met") for n in branch)


def test_batches_keep_at_most_their_limit_of_processes_open(repos, caplog):
    for repo, inner in ((repos.root, "neurovault/collection_1/l.nii"), (repos.sub, "l.nii")):
        (repo / inner).write_bytes(f"limit {inner}".encode())
    batches = Batches(repos.root, 60.0, limit=1)
    caplog.set_level(logging.DEBUG, logger="nv_datalad.dataset.runner")
    try:
        batches.ask("add", "neurovault/collection_1/l.nii")
        key = batches.ask("add", f"{SUB}/l.nii")["key"]
        assert list(batches._open) == [(repos.sub, "add")]  # the other one was closed
        batches.ask("metadata", f"{SUB}/l.nii", metadata_line({"a": 1}, key=key))
        assert list(batches._open) == [(repos.sub, "metadata")]
    finally:
        batches.close()
    assert batches._open == {}
    # metadata outlived its repository's add: closing commits its log all the same
    assert _merges(caplog) == 1
    assert _journal_empty(repos.sub) and _fields(repos.sub, "l.nii") == {"a": ["1"]}


def test_an_add_opened_again_commits_what_an_evicted_process_left(repos, caplog):
    for name in ("r1.nii", "r2.nii"):
        (repos.sub / name).write_bytes(f"again {name}".encode())
    batches = Batches(repos.root, 60.0, limit=1)
    with caplog.at_level(logging.DEBUG, logger="nv_datalad.dataset.runner"):
        try:
            key = batches.ask("add", f"{SUB}/r1.nii")["key"]
            batches.send("metadata", f"{SUB}/r1.nii", metadata_line({"b": 2}, key=key), tag="1")
            batches.ask("add", f"{SUB}/r2.nii")  # evicts metadata, whose log add then commits
        finally:
            batches.close()
    assert _merges(caplog) == 0 and _journal_empty(repos.sub)
    assert _fields(repos.sub, "r1.nii") == {"b": ["2"]}


def test_an_evicted_repository_closes_its_add_last(repos, caplog):
    (repos.sub / "e.nii").write_bytes(b"evicted")
    (repos.root / "neurovault/collection_1/e.nii").write_bytes(b"evictor")
    batches = Batches(repos.root, 60.0, limit=3)
    with caplog.at_level(logging.DEBUG, logger="nv_datalad.dataset.runner"):
        try:
            key = batches.ask("add", f"{SUB}/e.nii")["key"]
            batches.send("registerurl", f"{SUB}/e.nii", f"{key} http://127.0.0.1:9/e", tag="e")
            batches.send("metadata", f"{SUB}/e.nii", metadata_line({"c": 3}, key=key), tag="e")
            batches.ask("add", "neurovault/collection_1/e.nii")  # all three of SUB go
            assert list(batches._open) == [(repos.root, "add")]
        finally:
            batches.close()
    assert _merges(caplog) == 0 and _journal_empty(repos.sub)
    assert _fields(repos.sub, "e.nii") == {"c": ["3"]} and _web_urls(repos.sub, "e.nii") == [
        "http://127.0.0.1:9/e"]


def test_a_sent_line_that_fails_is_reported_with_its_command_and_tag(repos):
    with Annex(repos.root).batches() as batches:
        batches.send("metadata", f"{SUB}/x.nii", metadata_line({"d": 4}, file="absent.nii"),
                     tag="42")
    assert [(command, tag) for command, tag, _ in batches.failed] == [("metadata", "42")]
    assert batches.failed[0][2]  # git-annex's reason


def test_progress_in_one_repository_counts_every_file(repos):
    items = [(f"http://127.0.0.1:9/p{n}.nii.gz", f"neurovault/collection_1/p{n}.nii.gz", None)
             for n in range(3)]  # registering sends no request
    progress: list[int] = []
    Annex(repos.root).addurls(items, on_reply=progress.append)
    assert progress == [1, 2, 3]


def test_a_registered_file_without_content_is_discarded_too(repos):
    rel = "neurovault/collection_1/dangling.nii.gz"
    (got,) = Annex(repos.root).addurls([("http://127.0.0.1:9/dangling.nii.gz", rel, None)])
    assert got.ok and os.path.islink(repos.root / rel) and not (repos.root / rel).exists()
    discard(repos.root, rel)
    assert not os.path.lexists(repos.root / rel) and git(repos.root, "ls-files", "--", rel) == ""


def test_loopback_servers_are_allowed_once_and_other_settings_kept(tmp_path):
    git(tmp_path, "init", "-q")
    assert configure_loopback(tmp_path, ["neurovault.org"]) == []
    unset = subprocess.run(["git", "-C", str(tmp_path), "config", "--get",
                            "annex.security.allowed-ip-addresses"], capture_output=True)
    assert unset.returncode == 1  # nothing loopback: nothing written
    git(tmp_path, "config", "annex.security.allowed-ip-addresses", "10.1.1.1")
    assert configure_loopback(tmp_path, ["localhost", "127.0.0.1", "[::1]"]) == [
        "127.0.0.1", "::1"]
    assert git(tmp_path, "config", "--get", "annex.security.allowed-ip-addresses").strip() == \
        "10.1.1.1 127.0.0.1 ::1"
    assert configure_loopback(tmp_path, ["127.0.0.1", "localhost"]) == []
    assert git(tmp_path, "config", "--get", "annex.security.allowed-ip-addresses").strip() == \
        "10.1.1.1 127.0.0.1 ::1"
