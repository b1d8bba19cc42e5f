"""User-facing errors.

Every problem caused by a user's input (a broken FASTA, a bad config value, a VCF line that cannot be
read) is raised as :class:`GenossmError` with a message naming the file and the record or line. The
command line prints such errors as one clean message instead of a traceback.
"""

from __future__ import annotations


class GenossmError(Exception):
    """An error in the user's input or configuration, with a message meant for the user."""
