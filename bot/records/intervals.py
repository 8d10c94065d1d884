"""95% intervals for rates (Wilson score) and for differences of two rates (Newcombe's hybrid score), pure.

Newcombe, R. G. (1998). Interval estimation for the difference between independent proportions: comparison of
eleven methods. Statistics in Medicine 17, 873-890 (method 10). Both stay inside [0, 1] / [-1, 1] and behave at
0 and n, unlike the normal approximation."""

from __future__ import annotations

import math

__all__ = ["Z95", "newcombe", "wilson"]

Z95 = 1.959963984540054  # the two-sided 95% normal quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of k successes out of n (None when n is 0); 10/100 -> (0.0552, 0.1744)."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k} n={n}")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float] | None:
    """Hybrid score interval of p1 - p2 (k1/n1 minus k2/n2) from the two Wilson intervals (None when an n is 0);
    56/70 vs 48/80 -> (0.0524, 0.3339)."""
    a, b = wilson(k1, n1, z), wilson(k2, n2, z)
    if a is None or b is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = a, b
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)
