"""Where the Hydra configs, workflow scripts and bundled data live, in a checkout and in an installed wheel.

In a source checkout (or an editable install) they sit at the top of the repository: ``conf/``,
``workflows/``, ``data/``. A wheel carries them inside the package as ``genossm/_conf``,
``genossm/_workflows`` and ``genossm/_data`` (see ``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _locate(installed: str, checkout: str) -> Path:
    for candidate in (_PKG / installed, _PKG.parent / checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"genossm cannot find its {checkout}/ folder (looked in {_PKG / installed} and {_PKG.parent / checkout}); "
        "reinstall the package"
    )


def conf_dir() -> Path:
    return _locate("_conf", "conf")


def workflows_dir() -> Path:
    return _locate("_workflows", "workflows")


def data_dir() -> Path:
    return _locate("_data", "data")


def bundled(name: str) -> str:
    """Absolute path of a file shipped in ``data/``; used in configs as ``${bundled:NAME}``."""
    path = data_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"bundled data file {name!r} not found in {data_dir()}")
    return str(path)
