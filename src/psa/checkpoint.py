"""The last-known-good (LKG) checkpoint: a real safetensors file plus one JSON metadata string.

Loading never unpickles: a file that is not safetensors with PSA metadata is refused with one
message naming the file and how to start fresh. Writes are atomic (temp file in the same folder,
fsync, rename, fsync of the folder), so a crash leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psa
from psa.arch import Arch, ArchError, parse_key
from psa.atomic import write_bytes_atomically
from psa.config import MODELS
from psa.errors import PsaError, command_hint
from psa.modes import MODES

if TYPE_CHECKING:
    import torch

    from psa.model import Network

SCHEMA_VERSION = 1
METADATA_KEY = "psa"
DEFAULT_NAME = "mnist_lkg.safetensors"
HYPERPARAMETER_KEYS = ("lr", "batch_size", "weight_decay", "dropout", "precision")

_NUMBER = (int, float)
# Required top-level keys and their JSON types (bool is excluded from numbers below).
_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (int,),
    "model": (str,),
    "arch": (str,),
    "hyperparameters": (dict,),
    "seed": (int,),
    "data_seed": (int,),
    "loops_completed": (int,),
    "bounty": (*_NUMBER, type(None)),
    "bounty_loop": (int, type(None)),
    "mode_history": (list,),
    "psa_version": (str,),
    "torch_version": (str,),
}


class CheckpointError(PsaError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def make_metadata(
    *,
    model: str,
    arch: Arch,
    hyperparameters: dict[str, Any],
    seed: int,
    data_seed: int,
    mode: str,
    threads: int,
) -> dict[str, Any]:
    """Metadata of a fresh run: nothing trained yet, ``mode`` used from loop 1."""
    import torch

    metadata = {
        "schema": SCHEMA_VERSION,
        "model": model,
        "arch": arch.key,
        "hyperparameters": dict(hyperparameters),
        "seed": seed,
        "data_seed": data_seed,
        "threads": threads,
        "loops_completed": 0,
        "bounty": None,
        "bounty_loop": None,
        "mode_history": [{"mode": mode, "first_loop": 1}],
        "psa_version": psa.__version__,
        "torch_version": torch.__version__,
    }
    validate_metadata(metadata)
    return metadata


def validate_metadata(metadata: Any) -> None:
    """Raise ValueError describing the first way ``metadata`` breaks the schema."""
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not a JSON object")
    if metadata.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"schema {metadata.get('schema')!r}, expected {SCHEMA_VERSION}")
    for key, types in _FIELDS.items():
        if key not in metadata:
            raise ValueError(f"metadata lacks {key!r}")
        value = metadata[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"metadata {key!r} has the wrong type ({type(value).__name__})")
    if metadata["model"] not in MODELS:
        raise ValueError(f"unknown model {metadata['model']!r}")
    try:
        parse_key(metadata["arch"])
    except ArchError as error:
        raise ValueError(f"bad arch: {error}") from None
    missing = [key for key in HYPERPARAMETER_KEYS if key not in metadata["hyperparameters"]]
    if missing:
        raise ValueError(f"hyperparameters lack {', '.join(missing)}")
    if metadata["loops_completed"] < 0:
        raise ValueError("loops_completed is negative")
    threads = metadata.get("threads")  # absent in checkpoints written before it was recorded
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads {threads!r} is not a thread count")
    for key in ("seed", "data_seed"):
        if not 0 <= metadata[key] < 2**63:
            raise ValueError(f"{key} {metadata[key]} is outside 0 to 2**63 - 1")
    for entry in metadata["mode_history"]:
        if (
            not isinstance(entry, dict)
            or entry.get("mode") not in MODES
            or not isinstance(entry.get("first_loop"), int)
        ):
            raise ValueError(f"bad mode_history entry {entry!r}")


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write ``tensors`` and ``metadata`` to ``path`` atomically; the old file survives a crash."""
    validate_metadata(metadata)
    write_bytes_atomically(path, encode_safetensors(tensors, {METADATA_KEY: json.dumps(metadata)}))


def encode_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors payload of own contiguous CPU copies of ``tensors`` (safetensors refuses
    shared or strided storage, and device tensors)."""
    import safetensors.torch

    cpu = {
        name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in tensors.items()
    }
    return safetensors.torch.save(cpu, metadata={"format": "pt", **metadata})


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by save_checkpoint: (CPU tensors, metadata)."""
    import safetensors.torch

    path = Path(path)
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise CheckpointError(_refusal(path, f"cannot be read: {error.strerror}")) from None
    try:
        tensors = safetensors.torch.load(payload)
    except Exception as error:  # the Rust SafetensorError is not exported as a stable class
        raise CheckpointError(
            _refusal(path, f"is not a valid safetensors file ({error})")
        ) from None
    try:
        metadata = json.loads(_header(payload).get("__metadata__", {})[METADATA_KEY])
        validate_metadata(metadata)
    except (KeyError, TypeError, ValueError) as error:
        reason = (
            "has no PSA metadata" if isinstance(error, KeyError) else f"has bad metadata: {error}"
        )
        raise CheckpointError(_refusal(path, f"{reason}, so it was not written by psa")) from None
    return tensors, metadata


def check_compatible(metadata: dict[str, Any], model: str, arch: Arch, path: str | Path) -> None:
    """Refuse to resume a checkpoint of another model kind or architecture than asked for
    (``metadata`` is valid: load_checkpoint checked its arch)."""
    stored_model, stored_arch = metadata["model"], parse_key(metadata["arch"])
    if stored_model == model and stored_arch == arch:
        return
    flags = [
        flag
        for flag, differs in (
            ("--model", stored_model != model),
            ("--arch", stored_arch != arch),
        )
        if differs
    ]
    verb = "asks" if len(flags) == 1 else "ask"
    raise CheckpointError(
        f"{path} holds a {stored_model} {stored_arch.flag} but {' and '.join(flags)} {verb} for "
        f"{model} {arch.flag}; use --model-dir for a new run or {_clean_command(Path(path))} "
        "to start fresh"
    )


def check_tensors(tensors: dict[str, torch.Tensor], network: Network, path: str | Path) -> None:
    """Refuse a checkpoint whose tensors are not the float32 weights and biases of ``network``
    (its metadata names that architecture, so the file was altered or mixed up)."""
    import torch

    from psa.model import upstream_shapes

    expected = upstream_shapes(network)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    misshaped = sorted(
        name
        for name in set(expected) & set(tensors)
        if tuple(tensors[name].shape) != expected[name] or tensors[name].dtype != torch.float32
    )
    problems = [
        f"{label} {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
        for label, names in (
            ("lacks", missing),
            ("has unexpected", extra),
            ("misshapes", misshaped),
        )
        if names
    ]
    if problems:
        where = f"{network.model} {network.arch.flag}"
        raise CheckpointError(
            _refusal(
                Path(path), f"names {where} but its tensors do not fit it ({'; '.join(problems)})"
            )
        )


def _header(payload: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors payload (already validated by safetensors.torch.load)."""
    length = int.from_bytes(payload[:8], "little")
    return json.loads(payload[8 : 8 + length])


def _refusal(path: Path, reason: str) -> str:
    return f"checkpoint {path} {reason}; move it away or run {_clean_command(path)} to start fresh"


def _clean_command(path: Path) -> str:
    """The clean invocation that deletes exactly this checkpoint."""
    folder = path.parent
    command = command_hint("clean")
    if folder.resolve() != Path("models").resolve():
        command += f" --model-dir {folder}"
    if path.name != DEFAULT_NAME:
        command += f" {path.name}"
    return f"`{command}`"
