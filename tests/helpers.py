"""Small helpers shared by the tests: the one git runner, write and build a spec, run the CLI,
read a dataset, and nilearn's fetcher as the oracle."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from nv_datalad.cli import main

#: What the README says nilearn's default terms select from the demo corpus.
DEMO_DEFAULT_IMAGES = 57


def git(repo: Path, *args: str, input: str | None = None) -> str:
    """``git -C repo ARGS``, the one way tests call git: a failure raises
    ``CalledProcessError`` carrying stdout and stderr, so a test can assert on a refusal."""
    return subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True,
                          text=True, check=True).stdout


def annex(repo: Path, *args: str, input: str | None = None) -> str:
    return git(repo, "annex", *args, input=input)


def sigint_as_usual() -> None:
    """``preexec_fn`` for a child a test interrupts: a runner that starts the suite in the
    background (``cmd &`` in a script) hands SIGINT on ignored, and Python then never raises
    KeyboardInterrupt; the user's terminal does not."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_spec(tmp_path: Path, server: str, name: str = "test-ds", **fields) -> Path:
    spec = {"name": name, "server": server, "max_images": None, **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def nv(*args: str) -> int:
    """Run the CLI in-process (exit status as the user sees it)."""
    return main([str(a) for a in args])


def build(tmp_path: Path, server: str, **fields) -> tuple[Path, Path]:
    """Write a spec and build it into ``tmp_path/ds``, which must succeed: (spec, dataset)."""
    spec = write_spec(tmp_path, server, **fields)
    ds = tmp_path / "ds"
    assert nv("build", spec, "-d", ds) == 0
    return spec, ds


def clone(source: Path, dest: Path) -> Path:
    """A ``datalad clone``: metadata present, annexed content absent."""
    import datalad.api as dl

    dl.clone(source=str(source), path=str(dest), result_renderer="disabled")
    return dest


def image_ids(ds: Path) -> set[int]:
    """Ids of the images in the dataset, read from the files on disk."""
    ids = set()
    for sidecar in (ds / "neurovault").glob("collection_*/image_*_metadata.json"):
        ids.add(json.loads(sidecar.read_text())["id"])
    return ids


def sidecar(ds: Path, image_id: int) -> dict:
    (path,) = (ds / "neurovault").glob(f"collection_*/image_{image_id}_metadata.json")
    return json.loads(path.read_text())


def image_file(ds: Path, image_id: int) -> Path:
    (path,) = [p for p in (ds / "neurovault").glob(f"collection_*/image_{image_id}.nii*")
               if not p.name.endswith(".json")]
    return path


def key_of(ds: Path, image_id: int) -> str:
    rel = image_file(ds, image_id).relative_to(ds)
    return annex(ds, "lookupkey", str(rel)).strip()


def tags(ds: Path) -> list[str]:
    return git(ds, "tag", "--list", "v*").split()


def head(ds: Path) -> str:
    return git(ds, "rev-parse", "HEAD").strip()


#: What a user sets once (README) so git-annex may fetch from the emulator on 127.0.0.1, in
#: every repository of a clone (subdatasets included).
LOOPBACK = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "annex.security.allowed-ip-addresses",
            "GIT_CONFIG_VALUE_0": "127.0.0.1"}


def datalad(*args: str, cwd: Path | None = None) -> str:
    """The ``datalad`` command as a user runs it (loopback downloads allowed)."""
    import os

    return subprocess.run(["datalad", *args], cwd=cwd, capture_output=True, text=True,
                          check=True, env={**os.environ, **LOOPBACK}).stdout


def annexed_images(ds: Path) -> dict[int, tuple[str, str, dict]]:
    """image id → (path, annex key from its link, sidecar without the retrieval time), read
    from the work tree, subdatasets included."""
    import os

    out = {}
    for sc in sorted((ds / "neurovault").glob("collection_*/image_*_metadata.json")):
        data = json.loads(sc.read_text())
        data["nv_datalad"].pop("retrieved_at", None)
        (image,) = sc.parent.glob(f"image_{data['id']}.nii*")
        out[data["id"]] = (str(image.relative_to(ds)), Path(os.readlink(image)).name, data)
    return out


def nilearn_ids(emulator, tmp_path: Path, monkeypatch, **kwargs) -> set[int]:
    """What nilearn's own fetcher selects from the same emulator (the oracle)."""
    from nilearn.datasets import neurovault as nv_mod

    base = emulator.url + "/api/"
    monkeypatch.setattr(nv_mod, "_NEUROVAULT_BASE_URL", base)
    monkeypatch.setattr(nv_mod, "_NEUROVAULT_COLLECTIONS_URL", base + "collections/")
    monkeypatch.setattr(nv_mod, "_NEUROVAULT_IMAGES_URL", base + "images/")
    monkeypatch.setattr(nv_mod, "_NEUROSYNTH_FETCH_WORDS_URL", emulator.url + "/api/decode/")
    data = nv_mod.fetch_neurovault(data_dir=str(tmp_path), verbose=0, **kwargs)
    return {m["id"] for m in data.images_meta}
