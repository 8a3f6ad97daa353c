"""Graph passes over the link list that the solvers run before Newton."""

import numpy as np

from numba import njit


@njit(cache=True)
def tree_flows(order, pred_link, pred_node, node_demand, link_from, out):
    """Flows that balance every node on a spanning forest: walking the breadth-first ``order``
    backwards, each node passes its subtree's demand to its parent through ``pred_link``.
    ``out`` (per link, positive from -> to) is written only on tree links."""
    acc = node_demand.copy()
    for t in range(order.shape[0] - 1, -1, -1):
        v = order[t]
        k = pred_link[v]
        if k < 0:
            continue
        parent = pred_node[v]
        # flow parent -> v equals v's subtree demand
        out[k] = acc[v] if link_from[k] == parent else -acc[v]
        acc[parent] += acc[v]


@njit(cache=True)
def bfs_forest(indptr, adj_node, adj_link, roots, n):
    """Breadth-first spanning forest from ``roots`` over an adjacency in CSR form (``adj_link`` is
    the link id of each adjacency entry). Returns (order, pred_node, pred_link); -1 where none."""
    pred_node = np.full(n, -1, np.int64)
    pred_link = np.full(n, -1, np.int64)
    seen = np.zeros(n, np.bool_)
    order = np.empty(n, np.int64)
    head = 0
    tail = 0
    for r in roots:
        if not seen[r]:
            seen[r] = True
            order[tail] = r
            tail += 1
    while head < tail:
        v = order[head]
        head += 1
        for e in range(indptr[v], indptr[v + 1]):
            w = adj_node[e]
            if not seen[w]:
                seen[w] = True
                pred_node[w] = v
                pred_link[w] = adj_link[e]
                order[tail] = w
                tail += 1
    return order[:tail], pred_node, pred_link
