"""Find, fetch, verify and cache weights files, and load them without unpickling arbitrary objects.

Sources: a local path (or ``file://`` URL), an ``http(s)://`` URL (urllib), or any other fsspec URL
(``s3://``, ``gs://``, ...; s3 honours ``AWS_ENDPOINT_URL`` through botocore's own environment handling).

Cache layout (directory from :func:`iqa_plugin.env.cache_dir`, i.e. ``$IQA_PLUGIN_CACHE``, read on every
call)::

    <cache_dir>/<sha256>/<file name>            when the sha256 is known (mirrors share one entry)
    <cache_dir>/<sha256(url)[:16]>/<file name>  otherwise

A download streams to a temporary file next to its destination, is checked (size, sha256), and only then
moved into place with an atomic ``os.replace``, so a cached file is always a complete one. The sha256 is
checked again on every cache hit; a file that fails the check (cached or freshly downloaded) is deleted
and fetched once more, and a second failure raises :class:`WeightsError`. Nothing is downloaded at import.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from iqa_plugin import env

if TYPE_CHECKING:
    import torch

    from iqa_plugin.hub.cards import ModelCard

__all__ = [
    "WeightsError",
    "WeightsOfflineError",
    "cache_path_for",
    "manual_weights_path",
    "copy_into_cache",
    "load_checkpoint",
    "load_state_dict",
    "resolve_card_weights",
    "resolve_weights",
    "sha256_file",
]

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_USER_AGENT = "iqa-plugin (python urllib)"


class WeightsError(RuntimeError):
    """Weights could not be fetched, failed verification, or could not be loaded safely."""


class WeightsOfflineError(WeightsError):
    """Offline mode is on and the file is not in the cache."""


class _FetchFailed(Exception):
    """One source failed; the message says why (internal, collected into a WeightsError)."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _local_path(source: str | os.PathLike[str]) -> Path | None:
    """The path meant by ``source`` when it is local (a path or ``file://`` URL), else None."""
    if not isinstance(source, str):
        return Path(os.fspath(source)).expanduser()
    parts = urllib.parse.urlsplit(source)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if parts.scheme == "" or len(parts.scheme) == 1:  # a one-letter scheme is a Windows drive
        return Path(source).expanduser()
    return None


def _file_name(url: str, filename: str | None) -> str:
    if filename:
        return filename
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    return name or "weights"


def cache_path_for(url: str, *, sha256: str | None = None, filename: str | None = None) -> Path:
    """Where ``url`` is (or would be) cached; see the module docstring for the layout."""
    key = sha256 if sha256 else hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return env.cache_dir() / key / _file_name(url, filename)


def _mismatch(path: Path, sha256: str | None, size: int | None) -> str | None:
    """None when ``path`` has the expected size and hash, else a sentence saying what differs."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size is {actual_size} bytes, expected {size} bytes (sha256 expected {sha256 or 'not given'})"
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            return f"sha256 is {actual}, expected {sha256} (size {actual_size} bytes, expected {size or 'not given'})"
    return None


def _verify_local(path: Path, sha256: str | None, size: int | None) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"Weights file {path} does not exist; pass an existing file, an http(s) URL or an s3:// URL"
        )
    problem = _mismatch(path, sha256, size)
    if problem:
        raise WeightsError(
            f"Weights file {path}: {problem}. The file is damaged or a different version: "
            "replace it with the expected file, or pass a matching one."
        )
    return path


class _Progress:
    """Download progress on stderr: tqdm when installed, else one line every few seconds."""

    def __init__(self, name: str, total: int | None) -> None:
        self._name, self._total, self._done, self._last = name, total, 0, time.monotonic()
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr, leave=False)

    def update(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last > 5.0:
            self._last = time.monotonic()
            total = f"/{self._total / 1e6:.1f}" if self._total else ""
            print(f"downloading {self._name}: {self._done / 1e6:.1f}{total} MB", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _open_remote(url: str) -> tuple[IO[bytes], int | None]:
    """An open binary stream for ``url`` and its size when known; failures raise _FetchFailed."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    try:
        if scheme in ("http", "https"):
            response = urllib.request.urlopen(
                urllib.request.Request(url, headers={"User-Agent": _USER_AGENT}), timeout=_TIMEOUT_S
            )
            length = response.headers.get("Content-Length")
            return response, int(length) if length and length.isdigit() else None
        import fsspec

        handle = fsspec.open(url, "rb").open()
        return handle, getattr(handle, "size", None)
    except urllib.error.HTTPError as exc:
        raise _FetchFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except ImportError as exc:
        raise _FetchFailed(
            f"no filesystem installed for {scheme}:// ({exc}); e.g. `pip install s3fs` for s3://"
        ) from exc
    except Exception as exc:  # network/backends raise many types; each becomes one line of the report
        raise _FetchFailed(f"{type(exc).__name__}: {exc}") from exc


def _download_once(url: str, dest: Path, sha256: str | None, size: int | None) -> str | None:
    """Download ``url`` to ``dest`` if it verifies; returns None on success, else the mismatch sentence."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.part"
    stream, total = _open_remote(url)
    progress = _Progress(dest.name, total)
    try:
        with stream, open(partial, "wb") as out:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                progress.update(len(chunk))
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise _FetchFailed(f"download interrupted: {type(exc).__name__}: {exc}") from exc
    finally:
        progress.close()
    problem = _mismatch(partial, sha256, size)
    if problem:
        partial.unlink(missing_ok=True)
        return problem
    os.replace(partial, dest)
    return None


def _fetch_verified(url: str, dest: Path, sha256: str | None, size: int | None, attempts: int) -> Path:
    problem = None
    for _ in range(attempts):
        problem = _download_once(url, dest, sha256, size)
        if problem is None:
            return dest
    raise _FetchFailed(f"downloaded file failed verification {attempts} time(s): {problem}")


def _env_help() -> str:
    return (
        f"{env.CACHE_ENV} chooses the cache directory (now {env.cache_dir()}); "
        f"{env.OFFLINE_ENV}=1 forbids downloads (now {'on' if env.offline() else 'off'})."
    )


def _resolve_sources(
    urls: list[str], *, sha256: str | None, size: int | None, filename: str | None, what: str
) -> Path:
    """First usable copy among ``urls``: cached or local copies first, then downloads in mirror order."""
    targets: list[tuple[str, Path]] = []
    failures: list[str] = []
    corrupt_cache = False
    for url in urls:
        local = _local_path(url)
        if local is not None:
            if local.is_file():
                problem = _mismatch(local, sha256, size)
                if problem is None:
                    return local
                failures.append(f"{url}: {problem}")
            else:
                failures.append(f"{url}: no such file")
            continue
        dest = cache_path_for(url, sha256=sha256, filename=filename)
        targets.append((url, dest))
        if dest.is_file():
            problem = _mismatch(dest, sha256, size)
            if problem is None:
                return dest
            warnings.warn(
                f"Cached weights {dest} are damaged ({problem}); deleting and fetching again.", stacklevel=3
            )
            dest.unlink(missing_ok=True)
            corrupt_cache = True
    if targets and env.offline():
        paths = sorted({str(dest) for _, dest in targets})
        raise WeightsOfflineError(
            f"Offline ({env.OFFLINE_ENV} is set) and the weights for {what} are not cached.\n"
            f"  URL(s): {', '.join(url for url, _ in targets)}\n"
            f"  expected at: {' or '.join(paths)}\n"
            f"Fix: download the file on a machine with network access and copy it to that path (the cache "
            f"directory comes from {env.CACHE_ENV}, now {env.cache_dir()}), pass a local file path instead, "
            f"or unset {env.OFFLINE_ENV} to allow the download."
        )
    for url, dest in targets:
        try:
            return _fetch_verified(url, dest, sha256, size, attempts=1 if corrupt_cache else 2)
        except _FetchFailed as exc:
            failures.append(f"{url}: {exc}")
    first_dest = targets[0][1] if targets else None
    manual = f" or download it yourself and place it at {first_dest}" if first_dest else ""
    raise WeightsError(
        f"Could not get the weights for {what}; tried, in order:\n"
        + "\n".join(f"  - {line}" for line in failures)
        + f"\nFix: check the network or proxy, or that the mirror still serves the expected file"
        f"{manual}; or pass a local file path. {_env_help()}"
    )


def resolve_weights(
    source: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size: int | None = None,
    filename: str | None = None,
) -> Path:
    """Local path of the weights named by ``source``, downloading into the cache when needed.

    Args:
        source: a local path or ``file://`` URL (verified, never copied), an ``http(s)://`` URL, or any
            fsspec URL such as ``s3://bucket/key.pth``.
        sha256: expected hex digest; checked on local files, after download and on every cache hit.
        size: expected size in bytes, checked likewise.
        filename: file name inside the cache (default: the URL's last path segment).

    Raises:
        FileNotFoundError: a local path that does not exist.
        WeightsOfflineError: ``$IQA_PLUGIN_OFFLINE`` is set and the file is not cached.
        WeightsError: download failed, or the file does not match ``sha256``/``size``.
    """
    local = _local_path(source)
    if local is not None:
        return _verify_local(local, sha256, size)
    url = str(source)
    return _resolve_sources([url], sha256=sha256, size=size, filename=filename, what=url)


def resolve_card_weights(
    card: ModelCard, role: str = "model", override: str | os.PathLike[str] | None = None
) -> Path:
    """Local path of the ``role`` weights of ``card`` (``'model'``, or ``'base'`` for QualiCLIP+).

    ``override`` (a user's own path or URL) wins and is not checked against the card's sha256, since it
    is meant to be a different file, unless it is one of the card's own URLs.
    """
    if role not in card.weights:
        raise ValueError(
            f"Model card {card.name!r} has no {role!r} weights; its roles are {sorted(card.weights)}"
        )
    entry = card.weights[role]
    what = f"{card.name} ({role})"
    remote = [url for url in entry.urls if _local_path(url) is None]
    filename = _file_name(remote[0], None) if remote else None  # mirrors share one cache entry
    if override is not None:
        if isinstance(override, str) and override in entry.urls:
            return _resolve_sources(
                [override], sha256=entry.sha256, size=entry.bytes, filename=filename, what=what
            )
        return resolve_weights(override)
    if entry.manual_download is not None:
        return _manual_weights(card, role)
    return _resolve_sources(
        list(entry.urls), sha256=entry.sha256, size=entry.bytes, filename=filename, what=what
    )


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"Refusing to load {path}: it holds Python objects other than tensors and plain containers, and "
            "iqa_plugin only loads checkpoints with torch.load(weights_only=True) so that no code in the file "
            "runs. Re-save just the state dict (torch.save(model.state_dict(), ...)) or convert it to "
            f"safetensors. Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # a damaged file can fail anywhere inside the unpickler (IndexError, KeyError...)
        raise WeightsError(
            f"Cannot read {path} as a torch checkpoint ({type(exc).__name__}: {exc}); is the file complete?"
        ) from exc


def _select(state: Any, key: str | None, path: Path) -> Any:
    if key is None:
        return state
    if not isinstance(state, Mapping) or key not in state:
        tops = sorted(str(k) for k in state) if isinstance(state, Mapping) else []
        raise WeightsError(f"{path} has no top-level key {key!r}; its top-level keys are {tops}")
    return state[key]


def _under_key(flat: dict[str, torch.Tensor], key: str | None, path: Path) -> dict[str, torch.Tensor]:
    """The tensors named ``<key>.*`` with that prefix stripped (all of them when ``key`` is None)."""
    if key is None:
        return flat
    prefix = key + "."
    picked = {name[len(prefix) :]: t for name, t in flat.items() if name.startswith(prefix)}
    if not picked:
        tops = {name.split(".", 1)[0] for name in flat}
        raise WeightsError(f"{path} has no tensors under {key!r}; its top-level prefixes are {sorted(tops)}")
    return picked


def load_state_dict(path: str | os.PathLike[str], key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint on CPU: ``.safetensors`` via safetensors, a TorchScript archive (OpenAI's
    CLIP ``.pt``) by :mod:`iqa_plugin.hub.torchscript` (its ``state_dict()``, no code run), anything else
    via ``torch.load(weights_only=True)`` (never ``False``). ``key`` takes a sub-dict (``'params'``); for a
    safetensors or TorchScript file it takes the tensors named ``<key>.*`` and strips that prefix."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _under_key(load_file(str(path), device="cpu"), key, path)
        except WeightsError:
            raise
        except Exception as exc:  # safetensors raises its own error type for corrupt headers
            raise WeightsError(f"Cannot read {path} as safetensors ({type(exc).__name__}: {exc})") from exc
    from iqa_plugin.hub.torchscript import (
        TorchScriptError,
        is_torchscript_archive,
        load_torchscript_state_dict,
    )

    if is_torchscript_archive(path):  # OpenAI's CLIP archives: tensors read without running the archive
        try:
            return _under_key(load_torchscript_state_dict(path), key, path)
        except TorchScriptError as exc:
            raise WeightsError(f"Cannot read the TorchScript archive {exc}") from exc
    state = _select(_torch_load(path), key, path)
    if not isinstance(state, Mapping):
        raise WeightsError(
            f"{path}{f' [{key!r}]' if key else ''} holds a {type(state).__name__}, expected a dict of tensors"
        )
    others = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if others:
        raise WeightsError(
            f"{path}{f' [{key!r}]' if key else ''} is not a flat dict of tensors: entries {others[:10]} are not tensors; "
            "pass key=<one of them> to take a sub-dict"
        )
    return dict(state)


def load_checkpoint(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The whole checkpoint as saved (nested dicts such as BasicSR's ``{'params_ema': {...}}`` kept), loaded
    like :func:`load_state_dict`: safetensors, or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_state_dict(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist")
    state = _torch_load(path)
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, expected a dict (a state dict or a checkpoint)")
    return state


def copy_into_cache(path: str | os.PathLike[str], url: str, *, sha256: str | None = None) -> Path:
    """Place a file fetched by other means where :func:`resolve_weights` looks for ``url`` (for offline use)."""
    source = _verify_local(Path(path), sha256, None)
    dest = cache_path_for(url, sha256=sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.part"
    shutil.copyfile(source, partial)
    os.replace(partial, dest)
    return dest


def manual_weights_path(card: ModelCard, role: str = "model") -> Path:
    """Where a person places a file that cannot be downloaded automatically (``manual_download`` cards)."""
    return env.cache_dir() / "manual" / card.name / f"{role}.{card.weights[role].format}"


def _manual_weights(card: ModelCard, role: str) -> Path:
    entry = card.weights[role]
    path = manual_weights_path(card, role)
    if path.is_file():
        return _verify_local(path, entry.sha256, entry.bytes)
    raise WeightsError(
        f"The {role!r} weights of {card.name!r} cannot be downloaded automatically: {entry.manual_download} "
        f"(source: {', '.join(entry.urls)}). Then place the file at {path} "
        f"(the cache directory comes from {env.CACHE_ENV}) or pass its path as pretrained_model_path=."
    )
