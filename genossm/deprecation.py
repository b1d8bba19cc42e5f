"""Old keyword spellings of public Python functions, still accepted for one release with a DeprecationWarning.

The command line's keys are the code's names; where a function's keyword used another name, the old one maps
to the new here (the config edge has the same table per workflow: ``RENAMED`` and
:func:`genossm.config.renamed_keys`).
"""

from __future__ import annotations

import functools
import warnings


def renamed_keywords(**renames: str):
    """Decorate a function or ``__init__`` so that ``old=value`` is passed on as ``new=value`` with a
    DeprecationWarning; giving both spellings is a TypeError, as a repeated keyword is."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__qualname__}() got {old}= and {new}=: {old} is the old name of {new}; "
                                        f"give {new} only")
                    warnings.warn(f"{func.__qualname__}({old}=) is now {new}=; {old}= will be removed",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate
