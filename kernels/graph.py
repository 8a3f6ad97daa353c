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


@njit(cache=True)
def component_labels(n, link_a, link_b, use):
    """Connected-component label of every node over the links where ``use`` is True (union-find
    with path halving; labels are the component's root node, not consecutive)."""
    parent = np.arange(n)
    for k in range(link_a.shape[0]):
        if not use[k]:
            continue
        a = link_a[k]
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        b = link_b[k]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a != b:
            if a < b:
                parent[b] = a
            else:
                parent[a] = b
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        parent[i] = r
    return parent


@njit(cache=True)
def adjacency(n, link_a, link_b, links):
    """CSR adjacency over ``links`` (both directions): (indptr, neighbour node, link id), by a
    counting pass rather than a sort."""
    indptr = np.zeros(n + 1, np.int64)
    for t in range(links.shape[0]):
        k = links[t]
        indptr[link_a[k] + 1] += 1
        indptr[link_b[k] + 1] += 1
    for i in range(n):
        indptr[i + 1] += indptr[i]
    fill = indptr[:n].copy()
    other = np.empty(indptr[n], np.int64)
    lid = np.empty(indptr[n], np.int64)
    for t in range(links.shape[0]):
        k = links[t]
        a = link_a[k]
        b = link_b[k]
        other[fill[a]] = b
        lid[fill[a]] = k
        fill[a] += 1
        other[fill[b]] = a
        lid[fill[b]] = k
        fill[b] += 1
    return indptr, other, lid
