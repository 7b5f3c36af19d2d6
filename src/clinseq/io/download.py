"""Fetch a PhysioNet dataset into its publisher's layout, verified against its own ``SHA256SUMS.txt``.

:func:`download` is what ``clinseq download`` runs. The dataset's spec
(:data:`clinseq.io.physionet.DATASETS`) says where it lives; the files come from
``<base_url>/files/<slug>/<version>/<path>`` (``base_url`` defaults to ``https://physionet.org``, or
``$CLINSEQ_PHYSIONET_URL``: an institutional mirror or a test server with PhysioNet's layout) and land
at ``<dest>/<path>``, which is the folder ``clinseq convert`` reads.

How it goes:

1. ``SHA256SUMS.txt`` is fetched first; it lists every file of the release with its SHA-256.
2. The files to fetch: the top-level ones (tables, licence, README) and those under the chosen
   ``subsets``; with ``records=N``, the index tables are fetched first, the first N units are picked
   (:meth:`~clinseq.io.physionet.PhysioNetDataset.pick`) and only their files follow. Each index table
   is then rewritten to the picked rows (CSV rows and files match); the published original is kept,
   verified, under ``<dest>/.clinseq-download/originals/``.
3. Every file is fetched by :class:`ResumingDownloader` (pooch's HTTP downloader, with a ``Range``
   request for a file whose earlier transfer stopped part-way) into ``<path>.part``, checked against its
   SHA-256 and only then renamed to ``<path>``. A file already at ``<path>`` with the right SHA-256 is not
   fetched again, so running the same command again resumes an interrupted download. A cut connection
   is retried (``retries`` times) from where it stopped.
4. ``<dest>/.clinseq-download.json`` records the provenance (dataset, version, URL root, checksums
   verified, skipped files, the picked part); the store writer copies it into the store's manifest.

Credentials (credentialed datasets only): user from ``user`` or ``$PHYSIONET_USER``; password from
``$PHYSIONET_PASSWORD``, ``~/.netrc`` (the server's host) or a prompt. The password goes to the HTTP
basic-auth header only: it is never printed, logged or written.
"""

from __future__ import annotations

import getpass
import json
import netrc
import os
import shutil
import sys
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pooch
import requests
from tqdm.auto import tqdm

from clinseq import __version__
from clinseq.errors import ClinseqError
from clinseq.io.physionet import DATASETS, PHYSIONET_URL, PhysioNetDataset, parse_sha256sums
from clinseq.timeline.writer import DOWNLOAD_PROVENANCE

__all__ = [
    "PROVENANCE_FILE",
    "AccessError",
    "DownloadError",
    "ResumingDownloader",
    "download",
    "physionet_credentials",
]

#: The provenance file a download writes into its folder (copied into the store's manifest).
PROVENANCE_FILE = DOWNLOAD_PROVENANCE
URL_ENV = "CLINSEQ_PHYSIONET_URL"
USER_ENV = "PHYSIONET_USER"
PASSWORD_ENV = "PHYSIONET_PASSWORD"
_WORK_DIR = ".clinseq-download"

OnError = Literal["raise", "skip"]


class DownloadError(ClinseqError):
    """One file could not be fetched or did not match its checksum (the message names it)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class AccessError(ClinseqError):
    """The server refused the credentials (HTTP 401/403): says what access the dataset needs."""


class ResumingDownloader(pooch.HTTPDownloader):
    """pooch's HTTP downloader that resumes: when ``output_file`` already holds the first bytes (an
    earlier transfer stopped part-way), it asks only for the rest (``Range: bytes=<size>-``) and appends;
    a server that ignores ``Range`` (200) gets the file rewritten from its start.

    Args:
        auth: ``(user, password)`` for HTTP basic auth, or None.
        timeout: seconds to connect / between bytes.
        on_bytes: called with every chunk's byte count (a shared progress bar), negative when bytes
            counted earlier are thrown away; ``on_total`` with the bytes a response adds to the total.
    """

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 60.0,
        on_bytes: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
        chunk_size: int = 1 << 13,
    ) -> None:
        super().__init__(progressbar=False, chunk_size=chunk_size, auth=auth, timeout=timeout)
        self.on_bytes = on_bytes or (lambda n: None)
        self.on_total = on_total or (lambda n: None)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def __call__(
        self, url: str, output_file: str | os.PathLike[str], pooch: Any = None, check_only: bool = False
    ):
        if check_only:
            return super().__call__(url, output_file, pooch, check_only=True)
        path = Path(output_file)
        offset = path.stat().st_size if path.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        kwargs = dict(self.kwargs)
        timeout = kwargs.pop("timeout")
        with self._session().get(url, headers=headers, stream=True, timeout=timeout, **kwargs) as response:
            if response.status_code == 416 and offset:
                return None  # the partial file already holds every byte; the checksum decides
            response.raise_for_status()
            resumed = response.status_code == 206 and offset > 0
            length = int(response.headers.get("content-length", 0))
            self.on_total(length + (offset if resumed else 0))
            if resumed:
                self.on_bytes(offset)
            with path.open("ab" if resumed else "wb") as f:
                for chunk in response.iter_content(chunk_size=self.chunk_size):
                    f.write(chunk)
                    self.on_bytes(len(chunk))
        return None


def physionet_credentials(
    dataset: PhysioNetDataset, base_url: str, user: str | None = None, *, prompt: bool = True
) -> tuple[str, str] | None:
    """``(user, password)`` for a credentialed dataset (None for an open one).

    User: ``user``, else ``$PHYSIONET_USER``, else the ``~/.netrc`` login for the server's host, else a
    prompt. Password: ``$PHYSIONET_PASSWORD``, else ``~/.netrc``, else a prompt without echo
    (``getpass``). Without a terminal and without a password, a :class:`ClinseqError` says how to give one.
    """
    if not dataset.credentialed:
        return None
    host = urlsplit(base_url).hostname or ""
    from_netrc: tuple[str, str] | None = None
    try:
        entry = netrc.netrc().authenticators(host)
        if entry is not None and entry[2]:
            from_netrc = (entry[0], entry[2])
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    user = user or os.environ.get(USER_ENV) or (from_netrc[0] if from_netrc else None)
    password = os.environ.get(PASSWORD_ENV)
    if password is None and from_netrc is not None and from_netrc[0] == user:
        password = from_netrc[1]
    interactive = prompt and sys.stdin is not None and sys.stdin.isatty()
    if user is None:
        if not interactive:
            raise ClinseqError(
                f"{dataset.name} needs a PhysioNet login ({dataset.access}): give the user with --user or "
                f"${USER_ENV}"
            )
        user = input("PhysioNet user: ").strip()
    if password is None:
        if not interactive:
            raise ClinseqError(
                f"{dataset.name} needs the PhysioNet password of {user!r}: set ${PASSWORD_ENV}, add a "
                f"~/.netrc line for {host}, or run in a terminal to be asked"
            )
        password = getpass.getpass(f"PhysioNet password for {user}: ")
    return user, password


def _public_url(url: str) -> str:
    """``url`` without any user:password part (what is recorded)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)).rstrip("/")


@dataclass
class _Outcome:
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class _Fetcher:
    """Fetches single files of one dataset into ``dest`` (thread-safe; one shared byte progress bar)."""

    def __init__(
        self,
        dataset: PhysioNetDataset,
        root_url: str,
        dest: Path,
        auth: tuple[str, str] | None,
        progress: bool,
        retries: int,
        timeout: float,
    ) -> None:
        self.dataset, self.root_url, self.dest, self.retries = dataset, root_url, dest, retries
        self._lock = threading.Lock()
        self.bar = tqdm(
            total=0, unit="B", unit_scale=True, desc=f"download {dataset.name}", disable=not progress
        )
        self.downloader = ResumingDownloader(
            auth=auth, timeout=timeout, on_bytes=self._bytes, on_total=self._total
        )

    def _bytes(self, n: int) -> None:
        with self._lock:
            self.bar.update(n)

    def _total(self, n: int) -> None:
        with self._lock:
            self.bar.total = (self.bar.total or 0) + n
            self.bar.refresh()

    def url(self, rel: str) -> str:
        return f"{self.root_url}/{rel}"

    def fetch(self, rel: str, sha256: str | None, target: Path | None = None) -> bool:
        """Fetch ``rel`` to ``target`` (default ``dest/rel``) unless it is there with the right SHA-256;
        return whether bytes were fetched. ``sha256`` None: no check (``SHA256SUMS.txt`` itself)."""
        target = target or self.dest / rel
        if target.is_file() and (sha256 is None or pooch.file_hash(str(target)) == sha256):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        for attempt in range(self.retries + 1):
            try:
                self.downloader(self.url(rel), part)
                break
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in (401, 403):
                    raise AccessError(
                        f"{self.url(rel)}: the server refused access (HTTP {status}). {self.dataset.title} "
                        f"({self.dataset.name}) needs {self.dataset.access}"
                        + (
                            f"; check the user (--user or ${USER_ENV}) and the password (${PASSWORD_ENV}, "
                            "~/.netrc or the prompt)"
                            if self.dataset.credentialed
                            else ""
                        )
                    ) from None
                reason = "not found on the server (HTTP 404)" if status == 404 else f"HTTP {status}"
                raise DownloadError(rel, f"{reason}: {self.url(rel)}") from None
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                if attempt == self.retries:
                    have = part.stat().st_size if part.exists() else 0
                    raise DownloadError(
                        rel,
                        f"the connection was lost after {have} bytes ({type(exc).__name__}); run the same "
                        "command again to resume from there",
                    ) from None
        if sha256 is not None:
            got = pooch.file_hash(str(part))
            if got != sha256:
                part.unlink()
                raise DownloadError(
                    rel,
                    f"SHA-256 {got} does not match SHA256SUMS.txt ({sha256}): the file is corrupt on the "
                    "server or was changed in transit; it was deleted (not kept)",
                )
        os.replace(part, target)
        return True

    def fetch_many(self, files: dict[str, str], workers: int, on_error: OnError, outcome: _Outcome) -> None:
        """Fetch ``files`` (path → SHA-256) with at most ``workers`` transfers at a time."""

        def one(rel: str) -> None:
            try:
                fetched = self.fetch(rel, files[rel])
            except DownloadError as exc:
                if on_error == "raise":
                    raise
                with self._lock:
                    outcome.skipped.append({"path": rel, "reason": exc.problem})
                return
            with self._lock:
                (outcome.fetched if fetched else outcome.present).append(rel)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: set = set()
            try:
                # A bounded window of submitted transfers, so that an error stops the rest from starting.
                for rel in sorted(files):
                    pending.add(pool.submit(one, rel))
                    if len(pending) >= 2 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                done, pending = wait(pending)
                for future in done:
                    future.result()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise


def download(
    dataset: str,
    dest: str | os.PathLike[str],
    *,
    subsets: list[str] | tuple[str, ...] | None = None,
    records: int | None = None,
    base_url: str | None = None,
    version: str | None = None,
    user: str | None = None,
    workers: int = 4,
    on_error: OnError = "raise",
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    prompt: bool = True,
) -> dict[str, Any]:
    """Download ``dataset`` (a key of :data:`~clinseq.io.physionet.DATASETS`) into ``dest``; return the
    provenance record also written to ``dest/.clinseq-download.json``.

    Args:
        subsets: top-level folders to fetch (e.g. ``["records100"]`` for PTB-XL at 100 Hz); default all.
        records: fetch only the first ``records`` units (the spec's ``records_unit``), consistently.
        base_url: replaces ``https://physionet.org`` (default ``$CLINSEQ_PHYSIONET_URL``, else PhysioNet).
        version: the release (default the spec's).
        user: PhysioNet user for credentialed datasets (see :func:`physionet_credentials`).
        workers: at most this many transfers at a time.
        on_error: ``"raise"`` stops at the first file that fails (404, checksum); ``"skip"`` lists it
            in the provenance under ``skipped`` and goes on. A refused login always stops.
        retries: times a cut connection is resumed within this call.
    """
    if dataset not in DATASETS:
        raise ClinseqError(f"unknown dataset {dataset!r}: choose one of {sorted(DATASETS)}")
    if on_error not in ("raise", "skip"):
        raise ClinseqError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if workers < 1:
        raise ClinseqError(f"workers must be >= 1, got {workers}")
    if records is not None and records < 1:
        raise ClinseqError(f"records must be >= 1, got {records}")
    spec = DATASETS[dataset]
    subsets = tuple(subsets) if subsets else spec.subsets
    unknown = sorted(set(subsets) - set(spec.subsets))
    if unknown:
        raise ClinseqError(
            f"{dataset} has no subset {unknown}: its subsets are {list(spec.subsets) or 'none'}"
        )
    if records is not None and spec.picker is None:
        raise ClinseqError(f"--records does not apply to {dataset}: it has no per-record choice")
    base = (base_url or os.environ.get(URL_ENV) or PHYSIONET_URL).rstrip("/")
    version = version or spec.version
    root_url = f"{base}/files/{spec.slug}/{version}"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    auth = physionet_credentials(spec, base, user, prompt=prompt)

    fetcher = _Fetcher(spec, root_url, dest, auth, progress, retries, timeout)
    outcome = _Outcome()
    try:
        # 1. The release's checksums (fetched once; a later run reuses them).
        fetcher.fetch("SHA256SUMS.txt", None)
        sums = parse_sha256sums((dest / "SHA256SUMS.txt").read_text(), str(dest / "SHA256SUMS.txt"))
        top = {p: h for p, h in sums.items() if "/" not in p}
        chosen = {
            p: h for p, h in sums.items() if "/" in p and (not spec.subsets or p.split("/")[0] in subsets)
        }
        filtered: dict[str, Any] = {}
        units = None
        if records is not None:
            # 2. Index tables first (into originals/), then the first N units' files.
            originals = dest / _WORK_DIR / "originals"
            for name in spec.index_tables:
                if name in top:
                    fetcher.fetch(name, top[name], originals / name)
                    shutil.copyfile(originals / name, dest / name)
            pick = spec.pick(dest, records, subsets, sums)
            units = pick.units
            missing = sorted(pick.files - set(sums))
            if missing:
                raise ClinseqError(
                    f"{dataset}: the index lists files that SHA256SUMS.txt does not: {missing[:5]}"
                )
            # Files among the units' kind (default: every file in a folder) come only when picked.
            universe = pick.universe if pick.universe is not None else {p for p in sums if "/" in p}
            chosen = {p: h for p, h in chosen.items() if p not in universe or p in pick.files}
            top = {p: h for p, h in top.items() if p not in universe or p in pick.files}
            for name, text in pick.tables.items():
                (dest / name).write_text(text)
                filtered[name] = {
                    "rows": max(0, text.count("\n") - (0 if name == "RECORDS" else 1)),
                    "original": f"{_WORK_DIR}/originals/{name}",
                    "original_sha256": top[name],
                }
            top = {p: h for p, h in top.items() if p not in pick.tables and p not in spec.index_tables}
        # 3. Everything else, in parallel, verified.
        fetcher.fetch_many({**top, **chosen}, workers, on_error, outcome)
    finally:
        fetcher.bar.close()

    verified = sorted(outcome.fetched + outcome.present)
    provenance = {
        "dataset": spec.name,
        "title": spec.title,
        "physionet_project": spec.slug,
        "version": version,
        "url_root": _public_url(root_url),
        "checksums": "SHA256SUMS.txt",
        "checksums_verified": not outcome.skipped,
        "files_verified": len(verified),
        "files_fetched_now": len(outcome.fetched),
        "files_already_present": len(outcome.present),
        "skipped": sorted(outcome.skipped, key=lambda s: s["path"]),
        "subsets": list(subsets),
        "records": records,
        "records_unit": spec.records_unit if records is not None else None,
        "units_picked": units,
        "filtered_tables": filtered,
        "convert": spec.convert_command(str(dest)),
        "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clinseq_version": __version__,
    }
    tmp = dest / (PROVENANCE_FILE + ".partial")
    tmp.write_text(json.dumps(provenance, indent=1))
    os.replace(tmp, dest / PROVENANCE_FILE)
    return provenance
