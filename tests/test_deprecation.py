"""Old keyword names of public functions still work, with a DeprecationWarning, as their new names."""

from __future__ import annotations

import pytest

from genossm.deprecation import renamed_keywords


@renamed_keywords(mode="scan")
def scan_of(*, scan: str = "variants") -> str:
    return scan


def test_old_keyword_is_passed_as_the_new_one_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"mode=\) is now scan="):
        assert scan_of(mode="saturation") == "saturation"
    assert scan_of(scan="saturation") == "saturation"


def test_both_spellings_is_an_error():
    with pytest.raises(TypeError, match="give scan only"):
        scan_of(mode="saturation", scan="variants")
