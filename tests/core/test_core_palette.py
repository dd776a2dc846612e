"""One rounding of cluster shares and one naming, for the pages, the CLI and palette files."""

from __future__ import annotations

from kseg.shared.core.palette import colors, distinct_names, percents


def test_percents_add_up_to_100_with_largest_remainders() -> None:
    # 12 shares of 1/12 (8.333… %): plain rounding shows 8.3 twelve times (99.6 %); the
    # largest remainders hand out the missing 0.4 to the first four.
    shown = percents([1 / 12] * 12)
    assert round(sum(shown), 6) == 100
    assert sorted(set(shown)) == [8.3, 8.4]
    assert percents([0.083534, 0.916466]) == [8.4, 91.6]
    assert percents([]) == []


def test_repeated_names_are_numbered_in_order() -> None:
    assert distinct_names(["black", "white", "black", "black", ""]) == [
        "black",
        "white",
        "black 2",
        "black 3",
        "",
    ]


def test_colors_carry_the_shared_rounding_and_names() -> None:
    clusters = [
        {"label": 1, "rgb": [1, 1, 1], "hex": "#010101", "name": "black", "fraction": 0.5},
        {"label": 0, "rgb": [0, 0, 0], "hex": "#000000", "name": "black", "fraction": 0.5},
    ]
    got = colors(clusters)
    assert [c["hex"] for c in got] == ["#000000", "#010101"]  # label order
    assert [c["name"] for c in got] == ["black", "black 2"]
    assert [c["percent"] for c in got] == [50.0, 50.0]
