"""Where the jobs run and how they reach storage: one way to start or join Ray, one storage and
credential scheme, and redaction of secrets from anything printed.

**Ray.** :func:`ensure_ray` joins ``$RAY_ADDRESS`` (``ray job submit`` sets it) or an already initialised
Ray, else starts a local Ray with :func:`local_ray_cpus` logical CPUs (``max(4, cores)``, never raised
to fit a request); it shuts down only what it started. What a job needs at once is checked against the
cluster before any work (:func:`check_fits`): a request it can never satisfy fails at once with one
line saying what the cluster has, instead of waiting forever for actors that cannot be placed.

**Storage.** Any fsspec URI works (local paths, ``file://``, ``s3://``, ``gs://``, ...). What may travel
to Ray tasks is :class:`StorageSettings`: non-secret settings only (the S3 endpoint of
``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL``, for MinIO, moto, SeaweedFS, Ceph). Credentials never
travel: every process, driver or worker, takes them from its *own* environment or credential chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role). A local Ray's
workers inherit the driver's environment; on a cluster the nodes have their own, or the user passes a
``runtime_env``. Nothing here writes into another process's environment.

**Retries** are the storage libraries' own: botocore retries throttling, 5xx and connection errors
(tune with ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS``) and s3fs retries on top; Ray retries crashed
tasks and actors and ``DataContext.retried_io_errors`` covers its own reads and writes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ray_jobs.errors import UserError

#: Environment variable names whose values are secrets (redacted from every line the jobs print).
SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|private_key|session", re.IGNORECASE)
#: Storage option keys that carry credentials: refused in options that travel to Ray tasks.
SECRET_OPTION_KEYS = frozenset({
    "key", "secret", "token", "password", "access_key", "secret_key", "aws_access_key_id",
    "aws_secret_access_key", "aws_session_token", "session_token", "credentials", "sas_token", "account_key",
})
_S3_PROTOCOLS = ("s3", "s3a")


def redact(text: str) -> str:
    """``text`` with the value of every secret-named environment variable replaced by ``***``."""
    for name, value in os.environ.items():
        if value and len(value) >= 4 and SECRET_NAME.search(name):
            text = text.replace(value, "***")
    return text


#: The floor of logical CPUs of a command-started local Ray (see :func:`local_ray_cpus`).
LOCAL_RAY_MIN_CPUS = 4


def local_ray_cpus() -> int:
    """Logical CPUs of a local Ray started by a command: ``max(4, os.cpu_count())``.

    The floor of 4 lets a default job (one actor, one decode task, the writes) run on a 2-core laptop;
    a job's own request never raises it: oversubscribing logical CPUs far beyond the cores hides a
    request the machine cannot serve. A request larger than this fails at once (:func:`check_fits`).
    """
    return max(LOCAL_RAY_MIN_CPUS, os.cpu_count() or 1)


@contextlib.contextmanager
def ensure_ray(*, min_cpus: float = 0, log: Callable[[str], None] = print) -> Iterator[None]:
    """Use the Ray this process is connected to, else join ``$RAY_ADDRESS``, else start a local Ray.

    A local Ray gets :func:`local_ray_cpus` logical CPUs. ``min_cpus`` (what the job needs at once) is
    checked against the cluster before anything runs: a request it can never satisfy raises
    :class:`UserError` naming what is available. On leaving, a Ray started or joined here is shut down
    (for a joined cluster that only disconnects); one found running is left alone.
    """
    import ray

    if ray.is_initialized():
        check_fits(min_cpus=min_cpus)
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log(f"ray: joining the cluster at {address}")
        ray.init(address=address, log_to_driver=False)
    else:
        cpus = local_ray_cpus()
        if min_cpus > cpus:
            raise UserError(f"the job needs {min_cpus:g} CPUs at once but a local Ray on this machine has {cpus} "
                            "logical CPUs: ask for fewer actors or CPUs per actor, or set RAY_ADDRESS to a cluster")
        log(f"ray: starting a local Ray with {cpus} logical CPUs (set RAY_ADDRESS to use a cluster)")
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        check_fits(min_cpus=min_cpus)
        yield
    finally:
        ray.shutdown()


def _alive_node_resources() -> list[dict[str, float]]:
    import ray

    return [dict(node.get("Resources") or {}) for node in ray.nodes() if node.get("Alive")]


def check_fits(*, min_cpus: float = 0, actors: int = 0, per_actor: Mapping[str, float] | None = None,
               what: str = "the job", kind: str = "actor",
               fix: str = "lower --actors or the per-actor resources, or use a bigger cluster (RAY_ADDRESS)") -> None:
    """Refuse at once a request the connected Ray cluster can never satisfy (instead of waiting forever).

    ``actors`` actors of ``per_actor`` resources (``{'CPU': 1, 'GPU': 1, 'my-node': 0.1}``) must be
    placeable on the alive nodes at the same time, and ``min_cpus`` CPUs must exist in the cluster. An
    autoscaling cluster is judged by the nodes it has now. ``kind`` names the actors in the message
    (``'worker'`` for Ray Train workers), ``fix`` is its advice when they do not fit.

    Raises:
        UserError: one line with what was asked and what the cluster has.
    """
    nodes = _alive_node_resources()
    total_cpus = sum(node.get("CPU", 0.0) for node in nodes)
    where = (f"the Ray cluster has {total_cpus:g} CPUs on {len(nodes)} node(s) (largest "
             f"{max((n.get('CPU', 0.0) for n in nodes), default=0):g} CPUs, "
             f"{sum(n.get('GPU', 0.0) for n in nodes):g} GPUs in all)")
    if min_cpus > total_cpus + 1e-9:
        raise UserError(f"{what} needs {min_cpus:g} CPUs at once but {where}: ask for fewer actors or CPUs per "
                        "actor, or use a bigger cluster (RAY_ADDRESS)")
    wanted = {key: float(value) for key, value in (per_actor or {}).items() if value}
    if not actors or not wanted:
        return
    placeable = 0
    for node in nodes:
        placeable += int(min(node.get(key, 0.0) / value + 1e-9 for key, value in wanted.items()))
    if placeable < actors:
        asked = ", ".join(f"{value:g} {key}" for key, value in wanted.items())
        raise UserError(f"{what} needs {actors} {kind}(s) of {asked} each but {where}; only {placeable} such "
                        f"{kind}(s) fit: {fix}")


def protocol_of(uri: str) -> str:
    """The fsspec protocol of ``uri`` (``'file'`` for plain paths)."""
    if "://" not in uri:
        return "file"
    return uri.split("://", 1)[0].lower()


@dataclass(frozen=True)
class StorageSettings:
    """The non-secret storage settings a driver hands to its tasks (safe to pickle and to log).

    Attributes:
        s3_endpoint_url: the S3 endpoint for non-AWS stores; ``None`` for AWS itself.
        options: extra fsspec options given by the user (checked to hold no credentials).
    """

    s3_endpoint_url: str | None = None
    options: Mapping[str, Any] | None = None

    @classmethod
    def from_env(cls, options: Mapping[str, Any] | None = None) -> StorageSettings:
        """This process's settings: the endpoint from ``$AWS_ENDPOINT_URL_S3`` or ``$AWS_ENDPOINT_URL``."""
        check_no_credentials(options or {})
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        return cls(s3_endpoint_url=endpoint, options=dict(options or {}))


def check_no_credentials(options: Mapping[str, Any], where: str = "storage_options") -> None:
    """Refuse storage options that carry credentials (they would be pickled into task arguments)."""
    def keys(mapping: Mapping[str, Any]) -> Iterator[str]:
        for key, value in mapping.items():
            yield str(key)
            if isinstance(value, Mapping):
                yield from keys(value)

    found = sorted({key for key in keys(options) if key.lower() in SECRET_OPTION_KEYS})
    if found:
        raise UserError(
            f"{where} holds credentials ({', '.join(found)}): credentials are never passed to Ray tasks; set "
            "them in each node's environment or credential chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, an instance role) or a Ray runtime_env, and keep only non-secret options here")


def storage_options_for(uri: str, settings: StorageSettings | None = None) -> dict[str, Any]:
    """fsspec keyword arguments for the filesystem of ``uri``: never any credential.

    ``settings`` defaults to :meth:`StorageSettings.from_env` of this process.
    """
    settings = settings or StorageSettings.from_env()
    options: dict[str, Any] = {key: value for key, value in (settings.options or {}).items()}
    protocol = protocol_of(uri)
    if protocol in ("file", "local"):
        options.setdefault("auto_mkdir", True)  # writes create their folders, as on object stores
    elif protocol in _S3_PROTOCOLS and settings.s3_endpoint_url:
        client_kwargs = dict(options.get("client_kwargs") or {})
        if "endpoint_url" not in options:
            client_kwargs.setdefault("endpoint_url", settings.s3_endpoint_url)
        options["client_kwargs"] = client_kwargs
    return options


def filesystem_for(uri: str, settings: StorageSettings | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for any fsspec URI or local path (see the module doc)."""
    import fsspec

    return fsspec.core.url_to_fs(uri, **storage_options_for(uri, settings))


def full_uri(fs: Any, path: str) -> str:
    """The URI a worker can open again: ``s3://bucket/key`` for object stores, an absolute local path."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if protocol in ("file", "local"):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def join_uri(base: str, *names: str) -> str:
    """``base`` + ``/name...`` for local paths and URLs alike, without doubling slashes
    (``s3://b/x/`` + ``a`` -> ``s3://b/x/a``)."""
    return "/".join([base.rstrip("/"), *(name.strip("/") for name in names)])
