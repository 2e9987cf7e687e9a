"""Lazy package exports (PEP 562): a package lists its public names and the submodule of each; a name is
imported on first use. `import ibpo_fast`, the configs and the command line stay free of torch until a
name that needs it is touched (a config error is reported in well under a second)."""
from __future__ import annotations

import sys
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]):
    """(__getattr__, __dir__) for the package named `package`; `exports` maps name -> submodule."""

    def __getattr__(name: str):
        if name not in exports:  # AttributeError lets `from package import submodule` import the submodule
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
