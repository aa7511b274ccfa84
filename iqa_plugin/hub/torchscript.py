"""Read the weights of a TorchScript archive (OpenAI publishes CLIP only this way: ``RN50.pt``) without
running any of its code.

``torch.jit.load`` (what OpenAI's and open_clip's loaders call) compiles and runs the archive's TorchScript,
and ``torch.load(weights_only=True)`` refuses TorchScript. An archive is a zip of ``<name>/data.pkl`` (the
module tree: one object per module whose state is a dict of its attributes), ``<name>/data/<key>`` (raw
tensor storages) and ``<name>/code/`` (the TorchScript source, where each class lists its
``__parameters__`` and ``__buffers__``). Here the pickle is read by an unpickler that knows only tensors,
storages and plain containers (any other global is refused), the class sources are only *parsed* (``ast``)
to tell parameters and buffers from other attributes, and the result is the module's ``state_dict()``:
dotted names to tensors, nothing executed.
"""

from __future__ import annotations

import ast
import collections
import os
import pickle
import zipfile
from pathlib import PurePosixPath
from typing import Any

import torch

__all__ = ["TorchScriptError", "is_torchscript_archive", "load_torchscript_state_dict"]

_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip


class TorchScriptError(ValueError):
    """The archive holds something this reader does not read (the message says what)."""


def is_torchscript_archive(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a TorchScript zip (it has ``code/`` or ``constants.pkl``; ``torch.save`` files do not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for name in archive.namelist())


class _ScriptObject:
    """One pickled TorchScript object (a module): its class's qualified name and its attribute dict."""

    qualname = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


class _Unpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(archive.open(f"{root}/data.pkl"))
        self._archive, self._root = archive, root
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_ScriptObject,), {"qualname": f"{module}.{name}"})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if module == "torch.jit._pickle" and (name.startswith("build_") or name == "restore_type_tag"):
            return _identity  # typed TorchScript containers: build_intlist(list) -> list, restore_type_tag(x, t) -> x
        raise TorchScriptError(f"refusing to unpickle {module}.{name} (only tensors and plain containers are read)")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise TorchScriptError(f"unknown persistent record {pid!r}")
        if key not in self._storages:
            raw = bytearray(self._archive.read(f"{self._root}/data/{key}"))
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            self._storages[key] = flat[:numel]
        return self._storages[key]


def _identity(value: Any, *_: Any) -> Any:
    return value


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, requires_grad: bool,
                    hooks: Any, metadata: Any = None) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _state_names(archive: zipfile.ZipFile, root: str) -> dict[str, set[str]]:
    """Qualified class name -> names of its parameters and buffers, parsed (never run) from ``code/``."""
    names: dict[str, set[str]] = {}
    for member in archive.namelist():
        path = PurePosixPath(member)
        if not member.startswith(f"{root}/code/") or path.suffix != ".py":
            continue
        module = ".".join(path.relative_to(f"{root}/code").with_suffix("").parts)
        try:
            tree = ast.parse(archive.read(member).decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue  # that class's tensors are then all taken
        for node in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            found: set[str] = set()
            for statement in node.body:
                if isinstance(statement, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in ("__parameters__", "__buffers__") for t in statement.targets
                ) and isinstance(statement.value, (ast.List, ast.Tuple)):
                    found |= {str(e.value) for e in statement.value.elts if isinstance(e, ast.Constant)}
            names[f"{module}.{node.name}"] = found
    return names


def _collect(obj: _ScriptObject, prefix: str, names: dict[str, set[str]], out: dict[str, torch.Tensor]) -> None:
    known = names.get(obj.qualname)
    for attribute, value in obj.state.items():
        if isinstance(value, torch.Tensor) and (known is None or attribute in known):
            out[prefix + attribute] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{attribute}.", names, out)


def load_torchscript_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The ``state_dict()`` of the TorchScript module saved at ``path`` (CPU tensors, dtypes as stored),
    read without executing the archive.

    Raises:
        TorchScriptError: not a TorchScript archive, or one that holds objects other than tensors and
            containers (the message names the first such object).
    """
    if not is_torchscript_archive(path):
        raise TorchScriptError(f"{path} is not a TorchScript archive (no code/ or constants.pkl inside)")
    with zipfile.ZipFile(path) as archive:
        roots = sorted({n.split("/", 1)[0] for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1})
        if not roots:
            raise TorchScriptError(f"{path}: no <name>/data.pkl inside the archive")
        byteorder = f"{roots[0]}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"", b"little"):
            raise TorchScriptError(f"{path}: saved on a big-endian machine; re-save it on a little-endian one")
        try:
            top = _Unpickler(archive, roots[0]).load()
        except TorchScriptError as error:
            raise TorchScriptError(f"{path}: {error}") from None
        if not isinstance(top, _ScriptObject):
            raise TorchScriptError(f"{path}: the archive's data.pkl holds a {type(top).__name__}, not a module")
        state: dict[str, torch.Tensor] = {}
        _collect(top, "", _state_names(archive, roots[0]), state)
    return state
