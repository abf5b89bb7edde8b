"""Slurm hostlists: expansion, compression, and their round trip."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhapsody.hostlist import HostlistError, compress, expand, natural_key


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("", []),
        ("node1", ["node1"]),
        (
            "nid[001-003,010],gpu[1-2]",
            ["nid001", "nid002", "nid003", "nid010", "gpu1", "gpu2"],
        ),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("n[1-2]-ib", ["n1-ib", "n2-ib"]),
        ("a1, b2 ,a1", ["a1", "b2", "a1"]),
        ("x[5]", ["x5"]),
    ],
)
def test_expand(hostlist: str, hosts: list[str]) -> None:
    assert expand(hostlist) == hosts


@pytest.mark.parametrize(
    ("hostlist", "reason"),
    [
        ("nid[001-", "unclosed bracket"),
        ("nid]", "unmatched ']'"),
        ("n[[1]]", "nested '['"),
        ("a,,b", "empty host name"),
        ("a,", "empty host name"),
        ("n[]", "empty brackets"),
        ("n[3-1]", "range '3-1' runs backwards"),
        ("n[a-b]", "'a-b' is not a number or a range"),
        ("n[1-]", "'1-' is not a number or a range"),
        ("n[1-2-3]", "'1-2-3' is not a number or a range"),
        ("node 1", "whitespace in host name 'node 1'"),
    ],
)
def test_expand_rejects_malformed_lists(hostlist: str, reason: str) -> None:
    with pytest.raises(HostlistError) as caught:
        expand(hostlist)
    assert str(caught.value).startswith(f"malformed hostlist {hostlist!r}: {reason}")
    assert isinstance(caught.value, ValueError)


def test_malformed_message_matches_the_documented_form() -> None:
    with pytest.raises(ValueError, match=r"^malformed hostlist 'nid\[001-': unclosed bracket$"):
        expand("nid[001-")


@pytest.mark.parametrize(
    ("hosts", "hostlist"),
    [
        ([], ""),
        (["nid003", "nid001", "nid002", "gpu1"], "gpu1,nid[001-003]"),
        (["n10", "n2", "n1", "n2"], "n[1-2,10]"),
        (["n9", "n10"], "n[9-10]"),
        (["n09", "n10"], "n[09-10]"),
        (["n08", "n9"], "n[08,9]"),
        (["login", "c1"], "c1,login"),
        (["r1n1", "r1n2", "r2n1"], "r1n[1-2],r2n1"),
        (["a1-ib", "a2-ib", "a3"], "a3,a[1-2]-ib"),
    ],
)
def test_compress(hosts: list[str], hostlist: str) -> None:
    assert compress(hosts) == hostlist


@pytest.mark.parametrize("bad", ["", "n[1]", "a,b", "a b"])
def test_compress_rejects_names_that_cannot_be_written(bad: str) -> None:
    with pytest.raises(HostlistError, match="cannot compress host name"):
        compress(["ok1", bad])


# Names with padded and unpadded numbers, numbers in the middle, suffixes and no number at all.
# Derandomized: the same examples on every run, so a failure here is never a fluke of the seed.
deterministic = settings(derandomize=True, max_examples=200)

host_names = st.from_regex(r"[a-c]{0,2}(-?[0-9]{1,4})?(-[a-b][0-9]{0,3})?", fullmatch=True).filter(
    bool
)


@deterministic
@given(st.lists(host_names, max_size=40))
def test_expand_inverts_compress(hosts: list[str]) -> None:
    assert expand(compress(hosts)) == sorted(set(hosts), key=natural_key)


@deterministic
@given(st.lists(host_names, max_size=40))
def test_compress_is_stable(hosts: list[str]) -> None:
    once = compress(hosts)
    assert compress(expand(once)) == once


@deterministic
@given(st.lists(host_names, max_size=40), st.randoms())
def test_compress_ignores_order_and_duplicates(hosts: list[str], rng: random.Random) -> None:
    shuffled = hosts * 2
    rng.shuffle(shuffled)
    assert compress(shuffled) == compress(hosts)


@deterministic
@given(
    low=st.integers(0, 2000),
    span=st.integers(0, 50),
    width=st.integers(1, 5),
    prefix=st.sampled_from(["n", "nid", "gpu-", "x1y"]),
)
def test_expand_pads_to_the_width_of_the_lower_bound(
    low: int, span: int, width: int, prefix: str
) -> None:
    high = low + span
    hosts = expand(f"{prefix}[{low:0{width}d}-{high:0{width}d}]")
    assert hosts == [f"{prefix}{value:0{width}d}" for value in range(low, high + 1)]
