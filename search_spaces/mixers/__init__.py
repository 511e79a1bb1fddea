"""Built-in token mixers: every module in this package is imported, which registers its mixers
(see ``search_spaces.registry``). Add a mixer by adding a module here."""

import importlib
import pkgutil

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")
