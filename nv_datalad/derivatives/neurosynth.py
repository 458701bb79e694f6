"""Neurosynth words per image, and the (images × vocabulary) matrix nilearn builds from them.

The decoder (``GET <url>?neurovault=<image id>``) is often down: it answers HTML pages, 5xx or
empty ``values``. All of those mean "no words" for that image: reported as a result, never an
exception, never a failed build. A failed lookup costs little and is not repeated at once:

- each request gets at most one immediate retry (connection errors and 5xx only, no back-off,
  no ``Retry-After`` wait) and a 5 s connect / 10 s read timeout, on a session of its own: the
  API session's patient retries (5, with back-off) would cost ~15 s per failing image;
- failed images are remembered per image with a back-off (:mod:`~.misses`: 1 h doubling per
  attempt, capped at 7 days), so a rebuild asks only for images whose back-off has expired;
  ``retry_all`` asks for all of them.

Vectorising follows ``nilearn.datasets.neurovault.neurosynth_words_vectorized``: each file's
``data.values`` mapping goes through scikit-learn's ``DictVectorizer`` (sorted vocabulary), and an
image without a readable word file gets an all-zero row. The step is recorded with
``datalad run`` (``nv-datalad vectorize-words``) so it can be rerun; its outputs are
byte-for-byte deterministic, which also lets a rebuild skip the run (and its commit) when the
committed outputs already are what the word files give.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nv_datalad.dataset import layout, revision
from nv_datalad.dataset.files import write_atomic
from nv_datalad.derivatives.misses import MissLog
from nv_datalad.derivatives.runrecord import datalad_run, outputs_committed
from nv_datalad.records import Result, Status

lgr = logging.getLogger(__name__)

FETCH_ACTION = "neurosynth-words"
VECTORIZE_ACTION = "vectorize-words"
NO_WORDS = "no words"
DEFAULT_COMMAND = ("nv-datalad", "vectorize-words")
#: (connect, read) seconds per lookup: a decoder that does not answer is a miss, soon.
TIMEOUT = (5.0, 10.0)
#: Fixed zip member timestamp: ``numpy.savez`` stamps the current time, which would make every
#: rerun produce different bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- fetching


def words_values(payload: Any) -> dict | None:
    """The ``data.values`` mapping when it is a non-empty dict, else None."""
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    values = data.get("values") if isinstance(data, dict) else None
    return values if isinstance(values, dict) and values else None


def fetch_words(session, url: str, image_id: int, timeout: Any = TIMEOUT) -> dict | None:
    """The decoder's JSON for one image, or None when it has no usable words.

    Never raises for network trouble: HTML, 5xx, timeouts, bad JSON and empty values are all
    "no words", logged at INFO with the reason.
    """
    import requests

    iid = int(image_id)
    try:
        response = session.get(url, params={"neurovault": iid}, timeout=timeout)
    except requests.RequestException as exc:
        lgr.debug("no Neurosynth words for image %d: %s", iid, exc)
        return None
    if response.status_code != 200:
        lgr.debug("no Neurosynth words for image %d: HTTP %d", iid, response.status_code)
        return None
    try:
        payload = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown content")
        lgr.debug("no Neurosynth words for image %d: answer is not JSON (%s)", iid, kind)
        return None
    if words_values(payload) is None:
        lgr.debug("no Neurosynth words for image %d: empty or missing data.values", iid)
        return None
    return payload


def write_words(dataset: Path, collection_id: int, image_id: int, payload: dict) -> str:
    """Store the decoder's JSON under nilearn's name; returns the path relative to the dataset."""
    rel = layout.words_file(collection_id, image_id)
    target = Path(dataset) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, (json.dumps(payload, ensure_ascii=False) + "\n").encode("utf-8"))
    return str(rel)


def lookup_session(template=None, pool: int = 8):
    """A session for decoder lookups: ``template``'s identity (headers, proxies, TLS settings)
    with a lean retry policy of its own, so a failing image costs one quick retry at most."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    if template is not None:
        session.headers.update(template.headers)
        session.proxies.update(template.proxies)
        session.verify, session.cert = template.verify, template.cert
        session.trust_env = template.trust_env
    retry = Retry(
        total=1,
        connect=1,
        read=0,  # a decoder that timed out once will not answer the second time either
        status=1,
        backoff_factor=0,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=False,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _common(collection_id: int, image_id: int) -> dict:
    rel = str(layout.words_file(collection_id, image_id))
    return {"image_id": int(image_id), "collection_id": int(collection_id), "path": rel}


def _no_words(collection_id: int, image_id: int, **extra: Any) -> Result:
    return Result(
        FETCH_ACTION,
        Status.IMPOSSIBLE,
        message=NO_WORDS,
        extra={"reason": NO_WORDS, **extra},
        **_common(collection_id, image_id),
    )


def _fetch_one(
    session, url: str, dataset: Path, collection_id: int, image_id: int, timeout: Any
) -> Result:
    payload = fetch_words(session, url, image_id, timeout=timeout)
    if payload is None:
        return _no_words(collection_id, image_id)
    try:
        write_words(dataset, collection_id, image_id, payload)
    except OSError as exc:
        return Result(
            FETCH_ACTION,
            Status.ERROR,
            message=f"cannot write words: {exc}",
            **_common(collection_id, image_id),
        )
    return Result(FETCH_ACTION, Status.OK, **_common(collection_id, image_id))


def fetch_all(
    session,
    url: str,
    items: Sequence[tuple[int, int]],
    dataset: Path,
    jobs: int = 4,
    timeout: Any = TIMEOUT,
    *,
    retry_all: bool = False,
    now: datetime | None = None,
) -> list[Result]:
    """Fetch words for (collection id, image id) pairs in parallel; one Result per pair, in order.

    Images whose word file exists are ``notneeded``; images without words are ``impossible``
    with message ``"no words"`` (no file written) and ``extra["next_try"]``, the time after
    which a build asks again; ``extra["asked"]`` is False for those not asked this time because
    their back-off had not expired. ``session`` lends its headers and proxies to the lookups,
    not its retry policy. ``now`` (timezone-aware) stands for the current time.
    """
    if not items:
        return []
    root = Path(dataset)
    moment = now or datetime.now(UTC)
    misses = MissLog.load(root)
    results: dict[int, Result] = {}
    asked: list[tuple[int, int, int]] = []
    for index, (cid, iid) in enumerate(items):
        if (root / layout.words_file(cid, iid)).is_file():
            results[index] = Result(
                FETCH_ACTION, Status.NOTNEEDED, message="words already present", **_common(cid, iid)
            )
        elif retry_all or misses.due(iid, moment):
            asked.append((index, int(cid), int(iid)))
        else:
            results[index] = _no_words(cid, iid, next_try=misses.next_try(iid), asked=False)
    if asked:
        workers = max(1, min(jobs, len(asked)))
        with lookup_session(session, workers) as lean, ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(_fetch_one, lean, url, root, cid, iid, timeout) for _, cid, iid in asked
            ]
            fetched = [f.result() for f in futures]
        failed = [r.image_id for r in fetched if r.status == Status.IMPOSSIBLE]
        done = [r.image_id for r in [*fetched, *results.values()] if not r.failed]
        misses.record(failed=failed, succeeded=done, now=moment)
        misses.save()
        for (index, cid, iid), result in zip(asked, fetched, strict=True):
            if result.status == Status.IMPOSSIBLE:
                result = _no_words(cid, iid, next_try=misses.next_try(iid), asked=True)
            results[index] = result
    return [results[i] for i in range(len(items))]


# --------------------------------------------------------------------------- vectorising


def load_word_values(path: Path | None) -> dict:
    """One file's ``data.values``, or ``{}`` (an all-zero row) when unreadable, as nilearn."""
    if path is None:
        return {}
    try:
        info = json.loads(Path(path).read_bytes().decode("utf-8"))
        values = info["data"]["values"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        lgr.info("no words loaded from %s: %s", path, exc)
        return {}
    return values if isinstance(values, dict) else {}


def vectorize(word_files: Sequence[Path | None]):
    """(sparse frequencies, sorted vocabulary), rows in the order of ``word_files``.

    Same matrix and vocabulary as nilearn's ``neurosynth_words_vectorized`` (which returns the
    dense array). When no file has any word, nilearn returns ``(None, None)``; we return an
    ``(n, 0)`` matrix and an empty vocabulary so there is still one row per image.
    """
    from scipy import sparse
    from sklearn.feature_extraction import DictVectorizer

    words = [load_word_values(p) for p in word_files]
    if not any(words):
        return sparse.csr_matrix((len(words), 0)), []
    vectorizer = DictVectorizer()
    frequencies = sparse.csr_matrix(vectorizer.fit_transform(words))
    return frequencies, [str(term) for term in vectorizer.feature_names_]


def npz_bytes(matrix) -> bytes:
    """``scipy.sparse.save_npz`` output with fixed zip timestamps, so equal input, equal bytes."""
    from scipy import sparse

    raw = io.BytesIO()
    sparse.save_npz(raw, matrix, compressed=False)
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            dst.writestr(info, src.read(name))
    return out.getvalue()


def vocabulary_text(vocabulary: Sequence[str]) -> str:
    """One term per line; a line break inside a term would shift every later column."""
    lines = [term.replace("\r", " ").replace("\n", " ") for term in vocabulary]
    return "".join(f"{line}\n" for line in lines)


def words_files_from_table(images_tsv: Path, root: Path) -> list[Path | None]:
    """One entry per images.tsv row, in order: the row's word file, or None without one.

    The path is rebuilt from the row's ids (never taken from the table as is), so a hand-edited
    table cannot make us read outside the dataset.
    """
    files: list[Path | None] = []
    with open(images_tsv, newline="", encoding="utf-8") as fh:
        for number, row in enumerate(csv.DictReader(fh, delimiter="\t"), start=2):
            if not (row.get("words_path") or "").strip():
                files.append(None)
                continue
            try:
                rel = layout.words_file(row["collection_id"], row["image_id"])
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{images_tsv}:{number}: {exc}") from exc
            if row["words_path"].strip() != str(rel):
                lgr.warning(
                    "%s:%d: words_path %r is not the layout path %s; using the latter",
                    images_tsv,
                    number,
                    row["words_path"],
                    rel,
                )
            files.append(root / rel)
    return files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nv-datalad vectorize-words`` (run from the dataset root)."""
    parser.add_argument(
        "--images-tsv",
        type=Path,
        default=Path(layout.IMAGES_TSV),
        help="table whose rows (and words_path column) give the matrix rows",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(layout.NEUROSYNTH_DIR),
        help="where vocabulary.txt and word_frequencies.npz are written",
    )


def _outputs(files: Sequence[Path | None]) -> dict[str, bytes]:
    """The bytes of both outputs for these word files, by dataset-relative path."""
    frequencies, vocabulary = vectorize(files)
    return {
        layout.VOCABULARY: vocabulary_text(vocabulary).encode("utf-8"),
        layout.WORD_FREQUENCIES: npz_bytes(frequencies),
    }


def main_from_args(args: argparse.Namespace) -> int:
    """Write vocabulary.txt and word_frequencies.npz. 0: written; 2: unreadable table."""
    try:
        files = words_files_from_table(Path(args.images_tsv), Path.cwd())
    except (OSError, ValueError, csv.Error) as exc:
        lgr.error("vectorize-words: %s", exc)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs = _outputs(files)
    for rel, data in outputs.items():
        write_atomic(out / Path(rel).name, data)
    terms = outputs[layout.VOCABULARY].count(b"\n")
    lgr.info("vectorize-words: %d images, vocabulary of %d terms", len(files), terms)
    return 0


def vectorize_with_provenance(
    dataset: Path, jobs: int = 1, command_prefix: Sequence[str] | None = None
) -> Result:
    """Run the vectorising step under ``datalad run`` (inputs: images.tsv and the word files).

    ``ok`` when a commit recorded new outputs; ``notneeded``, without any run, when HEAD's
    outputs already are what the word files give (a no-op rebuild stays a no-op).
    """
    root = Path(dataset).absolute()
    table = root / layout.IMAGES_TSV
    try:
        files = words_files_from_table(table, root)
    except (OSError, ValueError, csv.Error) as exc:
        return Result(VECTORIZE_ACTION, Status.IMPOSSIBLE, message=f"cannot read table: {exc}")
    extra = {"images": len(files), "vocabulary": layout.VOCABULARY}
    if outputs_committed(root, _outputs(files)):
        return Result(VECTORIZE_ACTION, Status.NOTNEEDED, path=layout.WORD_FREQUENCIES, extra=extra)
    inputs = [
        layout.IMAGES_TSV,
        *sorted({str(f.relative_to(root)) for f in files if f is not None and f.is_file()}),
    ]
    (root / layout.NEUROSYNTH_DIR).mkdir(parents=True, exist_ok=True)
    cmd = [
        *(command_prefix or DEFAULT_COMMAND),
        "--images-tsv",
        layout.IMAGES_TSV,
        "--out-dir",
        layout.NEUROSYNTH_DIR,
    ]
    head = revision.resolve(root, "HEAD")
    run = datalad_run(
        root,
        cmd,
        inputs,
        [layout.VOCABULARY, layout.WORD_FREQUENCIES],
        f"Vectorize Neurosynth words of {len(files)} images",
        jobs=jobs,
    )
    if run.problems:
        return Result(
            VECTORIZE_ACTION, Status.ERROR, path=layout.WORD_FREQUENCIES, message=run.message()
        )
    changed = revision.resolve(root, "HEAD") != head
    return Result(
        VECTORIZE_ACTION,
        Status.OK if changed else Status.NOTNEEDED,
        path=layout.WORD_FREQUENCIES,
        extra=extra,
    )
