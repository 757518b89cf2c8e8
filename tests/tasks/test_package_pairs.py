"""Out-of-domain retrieval pairs from the docstrings of netsculpt's dependencies."""

from __future__ import annotations

from netsculpt.tasks._docpairs import PACKAGE_MODULES, docstring_pairs, package_pairs


def test_package_pairs_never_share_text_with_the_standard_library_pairs() -> None:
    pairs = package_pairs()
    assert len(pairs) >= 500
    stdlib = {t.lower() for p in docstring_pairs() for t in (p.query, p.document)}
    texts = [t.lower() for p in pairs for t in (p.query, p.document)]
    assert not stdlib.intersection(texts)
    assert len(set(texts)) == len(texts)
    assert {p.part for p in pairs} == {"packages"}
    packages = {m.partition(".")[0] for m in PACKAGE_MODULES}
    assert {p.name.partition(".")[0] for p in pairs} <= packages
    assert len({p.name.partition(".")[0] for p in pairs}) >= 4


def test_package_pairs_are_in_a_fixed_order() -> None:
    first = package_pairs()
    package_pairs.cache_clear()
    again = package_pairs()
    assert [p.query for p in first] == [p.query for p in again]
