"""Checkpoints: safetensors for every tensor, JSON for everything else, written atomically. Never pickle.

A checkpoint is a directory `checkpoints/step-00001234/` holding
    model.safetensors        the model's state dict (loaded strict)
    ema.safetensors          EMA weights, when the run keeps them
    optimizer.safetensors    the optimizer's tensors (AdamW moments, step counts)
    rng.safetensors          torch RNG states (CPU, CUDA, the trainer's generator)
    state.json               step, data position, optimizer hyper-parameters, Python/numpy RNG, configs
    COMPLETE                 written last: a directory without it is ignored
It is written under a temporary name, every file fsynced, then renamed into place, so a kill at any
moment leaves either the old set of checkpoints or the old set plus one complete new one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import replace_atomically, write_text_atomically

FORMAT_VERSION = 1
COMPLETE = "COMPLETE"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_pickle(path: str | os.PathLike) -> Path:
    """Raise for files that would need pickle to load; unclip never unpickles (it can run arbitrary code)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"refusing to load {path}: {path.suffix} files are pickles, which can run arbitrary code; "
                         "unclip reads safetensors only (convert with safetensors.torch.save_file)")
    return path


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file, with a clear error for a pickle, a missing file or a corrupt/truncated one."""
    path = refuse_pickle(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tensor file at {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {error}") from None


def _file_mode() -> int:
    """The mode open() gives a new file now: 0666 less the process's umask. Linux shows the umask in
    /proc/self/status; elsewhere reading it means setting it, which another thread could see, so it is read once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return _FALLBACK_FILE_MODE


def _umask_once() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FALLBACK_FILE_MODE = _umask_once()


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors to a safetensors file atomically: into a temporary file beside it, renamed over `path` only once
    complete, so a crash leaves the old file or the new one, never half of one. safetensors creates its files 0600
    whatever the umask; this gives them the mode every other file unclip writes gets, so a model saved to share can be
    read by whoever may read its config."""
    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        os.chmod(tmp, _file_mode())

    replace_atomically(path, write)


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with tied tensors cloned apart (safetensors stores no shared storage)."""
    seen, out = set(), {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        out[name] = tensor.clone() if key in seen else tensor
        seen.add(key)
    return out


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], *, source: str) -> None:
    """load_state_dict(strict=True), with the missing and unexpected keys named in the error."""
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the model: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    model.load_state_dict(tensors, strict=True)


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able hyper-parameters."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    entries: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    groups = meta["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise ValueError("optimizer state does not fit: its parameter groups differ from the model's")
    optimizer.load_state_dict({"state": entries, "param_groups": groups})


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first; half-written ones are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / COMPLETE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save_checkpoint(
    root: str | os.PathLike, step: int, *, files: dict[str, dict[str, torch.Tensor]], state: dict, keep: int = 3
) -> Path:
    """Write `files` ({"model": tensors, ...} -> NAME.safetensors) and state.json as step-NNNNNNNN, atomically.

    Keeps the newest `keep` complete checkpoints and removes stale temporary directories.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, tensors in files.items():
        write_tensors(tmp / f"{name}.safetensors", tensors)
    (tmp / "state.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "step": step} | state, indent=1))
    (tmp / COMPLETE).write_text(f"{step}\n")
    for child in tmp.iterdir():
        _fsync(child)
    _fsync(tmp)
    if final.exists():  # the same step saved again (a rerun): replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(root)
    for _, old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """({"model": tensors, ...}, state) of a complete checkpoint directory."""
    path = Path(path)
    if not (path / COMPLETE).is_file():
        raise ValueError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}/state.json is unreadable: {error}") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {state.get('format_version')}, this unclip reads "
                         f"{FORMAT_VERSION}")
    files = {p.name[: -len(".safetensors")]: read_tensors(p) for p in sorted(path.glob("*.safetensors"))}
    return files, state


def save_stage(directory: str | os.PathLike, model: torch.nn.Module, *, kind: str, config_file: str) -> None:
    """A trained stage as a directory: model.safetensors + CONFIG_FILE {"kind", "config"}, each written atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / "model.safetensors", model_tensors(model))
    record = {"kind": kind, "config": model.config.to_dict()}
    write_text_atomically(directory / config_file, json.dumps(record, indent=1))


def load_stage(directory: str | os.PathLike, kinds: dict[str, tuple[type, type]], *, config_file: str,
               what: str) -> torch.nn.Module:
    """The stage saved by save_stage in `directory`, built from kinds[kind] = (module class, config class),
    loaded strictly, in eval mode on the CPU."""
    directory = Path(directory)
    config_path = directory / config_file
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} holds no {config_file}: not a {what} directory")
    record = json.loads(config_path.read_text())
    if record.get("kind") not in kinds:
        raise ValueError(f"{config_path}: unknown kind {record.get('kind')!r}; expected one of {list(kinds)}")
    cls, config_cls = kinds[record["kind"]]
    model = cls(config_cls.from_dict(record["config"]))
    load_model_tensors(model, read_tensors(directory / "model.safetensors"), source=str(directory))
    return model.eval()
