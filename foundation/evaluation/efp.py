"""Energy flow polynomials (EFPs, arXiv 1712.07124), written from the definition.

The multigraphs of degree <= 4 are enumerated here (one per isomorphism class), and each EFP is one
einsum over a batch of jets. With the hadronic measure (beta = 1) and z_i = pT_i / pT_jet these are
the 36 EFPs jetnet's `get_fpd_kpd_jet_features` takes from energyflow
(`EFPSet(("d<=", 4), measure="hadr", beta=1, normed=None)`), without energyflow (it pins numpy < 2).
The distances built on them (FPD, KPD) are in foundation/evaluation/generation.py.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from foundation.data.features import wrap_phi
from foundation.data.jets import jet_kinematics


def particle_pt_eta_phi(
    constituents: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(J, N) pT, pseudorapidity and azimuth of each particle; zero at padded entries."""
    c = constituents.astype(np.float64)
    px, py, pz = c[..., 1], c[..., 2], c[..., 3]
    pt = np.where(mask, np.hypot(px, py), 0.0)
    safe_pt = np.where(pt > 0, pt, 1.0)
    eta = np.where(mask, np.arcsinh(pz / safe_pt), 0.0)
    phi = np.where(mask, np.arctan2(py, px), 0.0)
    return pt, eta, phi




@dataclass(frozen=True)
class Multigraph:
    """A loopless multigraph: vertices 0..n_vertices-1, edges (i, j, multiplicity) with i < j."""

    n_vertices: int
    edges: tuple[tuple[int, int, int], ...]

    @property
    def degree(self) -> int:
        return sum(w for _, _, w in self.edges)


def _canonical(n: int, pairs: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """The smallest relabelling of an edge multiset: equal for isomorphic multigraphs."""
    best = None
    for perm in itertools.permutations(range(n)):
        relabelled = tuple(sorted((min(perm[i], perm[j]), max(perm[i], perm[j])) for i, j in pairs))
        if best is None or relabelled < best:
            best = relabelled
    return best


def _is_connected(n: int, pairs) -> bool:
    seen, stack = {0}, [0]
    while stack:
        v = stack.pop()
        for i, j in pairs:
            for a, b in ((i, j), (j, i)):
                if a == v and b not in seen:
                    seen.add(b)
                    stack.append(b)
    return len(seen) == n


@functools.cache
def connected_multigraphs(max_degree: int = 4) -> tuple[Multigraph, ...]:
    """All connected loopless multigraphs with at most `max_degree` edges, one per isomorphism class.

    Includes the single vertex (d = 0). Ordered by degree, then number of vertices. For d = 0..4
    there are 1, 1, 2, 5, 12 (OEIS A076864), 21 in all.
    """
    found = {(1, ())}
    for d in range(1, max_degree + 1):
        for n in range(2, d + 2):  # a connected graph with d edges has at most d + 1 vertices
            all_pairs = list(itertools.combinations(range(n), 2))
            for pairs in itertools.combinations_with_replacement(all_pairs, d):
                if len({v for p in pairs for v in p}) == n and _is_connected(n, pairs):
                    found.add((n, _canonical(n, pairs)))
    graphs = []
    for n, pairs in found:
        counts: dict[tuple[int, int], int] = {}
        for p in pairs:
            counts[p] = counts.get(p, 0) + 1
        graphs.append(Multigraph(n, tuple((i, j, w) for (i, j), w in sorted(counts.items()))))
    return tuple(sorted(graphs, key=lambda g: (g.degree, g.n_vertices, g.edges)))


@functools.cache
def disconnected_products(max_degree: int = 4) -> tuple[tuple[int, ...], ...]:
    """Disconnected EFPs as tuples of indices into `connected_multigraphs(max_degree)`.

    An EFP of a disconnected graph is the product of the EFPs of its components. As in
    energyflow, components are graphs with d >= 1 (a bare vertex factor is left out): for
    d <= 4 that makes 1 + 3 + 11 = 15 products.
    """
    graphs = connected_multigraphs(max_degree)
    candidates = [i for i, g in enumerate(graphs) if g.degree >= 1]
    out = []
    for k in range(2, max_degree + 1):
        for combo in itertools.combinations_with_replacement(candidates, k):
            if sum(graphs[i].degree for i in combo) <= max_degree:
                out.append(combo)
    return tuple(sorted(out, key=lambda c: (sum(graphs[i].degree for i in c), len(c), c)))


def efp_names(max_degree: int = 4) -> list[str]:
    """Column names of `energy_flow_polynomials`: the edges of each graph, e.g. 'n3:01x2,02'."""

    def name(g: Multigraph) -> str:
        edges = ",".join(f"{i}{j}" + (f"x{w}" if w > 1 else "") for i, j, w in g.edges)
        return f"n{g.n_vertices}:{edges}" if edges else "n1:"

    graphs = connected_multigraphs(max_degree)
    return [name(g) for g in graphs] + [
        "*".join(name(graphs[i]) for i in c) for c in disconnected_products(max_degree)
    ]


_LETTERS = "abcdefghij"


def efp_value(graph: Multigraph, z: np.ndarray, theta_powers: Mapping[int, np.ndarray]) -> np.ndarray:
    """EFP_G = sum over particle tuples (i_1..i_n) of prod_v z_{i_v} prod_edges theta_{i_a i_b}^w, per jet.

    z: (J, N) energy fractions, zero for padded particles; theta_powers[w]: (J, N, N) theta^w.
    One einsum over the batch; optimize=True lets numpy contract vertex by vertex, which costs
    O(J N^2) for trees and O(J N^3) for graphs with a cycle instead of O(J N^n).
    """
    if graph.n_vertices == 1:
        return z.sum(axis=1)
    operands, subscripts = [], []
    for i, j, w in graph.edges:
        operands.append(theta_powers[w])
        subscripts.append("z" + _LETTERS[i] + _LETTERS[j])
    for v in range(graph.n_vertices):
        operands.append(z)
        subscripts.append("z" + _LETTERS[v])
    return np.einsum(",".join(subscripts) + "->z", *operands, optimize=True)  # (J,)


def energy_flow_polynomials(
    constituents: np.ndarray,
    mask: np.ndarray,
    max_degree: int = 4,
    beta: float = 1.0,
    normed: bool = False,
    chunk_elements: int = 2**21,
) -> np.ndarray:
    """(J, K) EFPs of degree <= max_degree with the hadronic measure; K = 36 for max_degree = 4.

    theta_ij = (Delta eta_ij^2 + Delta phi_ij^2)^(beta/2), Delta phi wrapped into [-pi, pi).
    z_i = pT_i / pT_jet (jet pT of the 4-vector sum) by default: jetnet feeds pT_rel to energyflow
    with normed=None, which energyflow treats as unnormalised. normed=True gives
    z_i = pT_i / sum_j pT_j as in the EFP paper, for which the d = 0 EFP is 1.
    Columns: connected graphs (`connected_multigraphs`), then products (`disconnected_products`);
    see `efp_names`. Padded particles get z = 0, so they drop out of every sum.
    """
    graphs = connected_multigraphs(max_degree)
    products = disconnected_products(max_degree)
    max_weight = max((w for g in graphs for _, _, w in g.edges), default=1)
    pt, eta, phi = particle_pt_eta_phi(constituents, mask)
    if normed:
        total = pt.sum(axis=1, keepdims=True)
    else:
        total = jet_kinematics(constituents, mask)["pt"][:, None]
    z_all = pt / np.where(total > 0, total, 1.0)  # (J, N)

    out = np.empty((len(pt), len(graphs) + len(products)))
    n_jets = len(pt)
    width = max(int(mask.sum(axis=1).max()) if n_jets else 1, 1)
    chunk = max(1, chunk_elements // (width * width))
    for start in range(0, n_jets, chunk):
        sl = slice(start, min(start + chunk, n_jets))
        # Real particles first, and only as many columns as the widest jet of the chunk needs.
        n_max = max(int(mask[sl].sum(axis=1).max()), 1)
        order = np.argsort(~mask[sl], axis=1, kind="stable")[:, :n_max]  # (C, n_max)
        z = np.take_along_axis(z_all[sl], order, axis=1)
        e = np.take_along_axis(eta[sl], order, axis=1)
        p = np.take_along_axis(phi[sl], order, axis=1)
        d_phi = wrap_phi(p[:, :, None] - p[:, None, :])
        theta = (np.square(e[:, :, None] - e[:, None, :]) + np.square(d_phi)) ** (beta / 2)  # (C, n, n)
        powers = {1: theta}
        for w in range(2, max_weight + 1):
            powers[w] = powers[w - 1] * theta
        for k, g in enumerate(graphs):
            out[sl, k] = efp_value(g, z, powers)
    for k, combo in enumerate(products):
        out[:, len(graphs) + k] = np.prod(out[:, list(combo)], axis=1)
    return out
