"""Pareto fronts: the rows no other row beats on both of two metrics at once."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> set[int]:
    """Indices of the non-dominated points, both coordinates to be minimised.

    A point is dominated when another is no worse on both and better on one; equal points do
    not dominate each other. One sort and a sweep: O(n log n).
    """
    order = sorted(range(len(points)), key=lambda i: points[i])
    front: set[int] = set()
    best_a = best_b = float("inf")
    for i in order:
        a, b = points[i]
        if b < best_b:
            front.add(i)
            best_a, best_b = a, b
        elif b == best_b and a == best_a:
            front.add(i)  # a duplicate of the point that set best_b
    return front
