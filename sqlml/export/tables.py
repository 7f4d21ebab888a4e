"""ONNX TreeEnsembleClassifier / TreeEnsembleRegressor attributes as flat node tables.

Checked the way onnxruntime's Init checks them, and TensorFlow-free: the export walks these
tables with tf.gather (`sqlml.export.trees`) and the native scorer (`sqlml.runtimes.trees`)
walks them in C, so both read a tree ensemble the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sqlml.export.node import Node

MODES = {
    "LEAF": 0,
    "BRANCH_LEQ": 1,
    "BRANCH_LT": 2,
    "BRANCH_GTE": 3,
    "BRANCH_GT": 4,
    "BRANCH_EQ": 5,
    "BRANCH_NEQ": 6,
}
AGGREGATES = ("SUM", "AVERAGE", "MIN", "MAX")


@dataclass
class Ensemble:
    """All trees of one node as flat tables (index = position in the node's attribute lists)."""

    feature: np.ndarray  # int32 [nodes]
    threshold: np.ndarray  # float [nodes]
    true_next: np.ndarray  # int32 [nodes]; a leaf points to itself
    false_next: np.ndarray  # int32 [nodes]
    mode: np.ndarray  # int32 [nodes], MODES codes
    missing_true: np.ndarray  # bool [nodes]
    roots: np.ndarray  # int32 [trees], in onnxruntime's order
    depths: np.ndarray  # int32 [trees], steps from each root to its deepest leaf
    weights: np.ndarray  # float [nodes, outputs], summed leaf weights (0 where none)
    present: np.ndarray  # bool [nodes, outputs], the leaf carries a weight for that output
    wide: bool  # weights/thresholds given as doubles (*_as_tensor)

    @property
    def depth(self) -> int:
        """The deepest tree's depth: how many steps walk every row to its leaf in every tree."""
        return int(self.depths.max())

    def always(self, k: int) -> bool:
        """Every leaf scores output k, so every row has a score for it."""
        return bool(self.present[self.mode == 0, k].all())

    def never(self, k: int) -> bool:
        return not bool(self.present[:, k].any())


def floats(node: Node, name: str) -> tuple[np.ndarray | None, bool]:
    """A float attribute, or its `_as_tensor` double twin (second value: it was double)."""
    if name + "_as_tensor" in node.attrs:
        return np.asarray(node.attrs[name + "_as_tensor"], dtype=np.float64).ravel(), True
    if name in node.attrs:
        return np.asarray(node.attrs[name], dtype=np.float32), False
    return None, False


def parse(node: Node, prefix: str, outputs: int, first_weight_only: bool) -> Ensemble:
    """Check the attributes the way onnxruntime's Init does and build the tables."""
    tree_ids = np.asarray(node.attrs.get("nodes_treeids", []), dtype=np.int64)
    node_ids = np.asarray(node.attrs.get("nodes_nodeids", []), dtype=np.int64)
    count = len(tree_ids)
    if count == 0:
        raise node.fail("the ensemble has no nodes")
    features = np.asarray(node.attrs.get("nodes_featureids", []), dtype=np.int64)
    true_ids = np.asarray(node.attrs.get("nodes_truenodeids", []), dtype=np.int64)
    false_ids = np.asarray(node.attrs.get("nodes_falsenodeids", []), dtype=np.int64)
    mode_names = node.strings("nodes_modes")
    thresholds, wide_values = floats(node, "nodes_values")
    missing = np.asarray(node.attrs.get("nodes_missing_value_tracks_true", []), dtype=np.int64)
    for name, values in (
        ("nodes_nodeids", node_ids),
        ("nodes_featureids", features),
        ("nodes_truenodeids", true_ids),
        ("nodes_falsenodeids", false_ids),
        ("nodes_modes", mode_names),
        ("nodes_values", thresholds if thresholds is not None else []),
    ):
        if len(values) != count:
            raise node.fail(f"{name} has {len(values)} entries for {count} nodes")
    unknown = sorted(set(mode_names) - set(MODES))
    if unknown:
        raise node.fail(f"unknown node modes {unknown} (supported: {', '.join(MODES)})")
    modes = np.asarray([MODES[m] for m in mode_names], dtype=np.int32)
    missing_true = np.zeros(count, dtype=bool)
    missing_true[: len(missing)] = missing[:count] == 1
    position = {}
    for i, key in enumerate(zip(tree_ids.tolist(), node_ids.tolist())):
        if key in position:
            raise node.fail(f"node {key[1]} of tree {key[0]} appears twice")
        position[key] = i
    true_next = np.arange(count, dtype=np.int32)
    false_next = np.arange(count, dtype=np.int32)
    for i in np.flatnonzero(modes != 0):
        for ids, table, side in ((true_ids, true_next, "true"), (false_ids, false_next, "false")):
            child = position.get((int(tree_ids[i]), int(ids[i])))
            if child is None or child == i:
                raise node.fail(f"node {node_ids[i]} of tree {tree_ids[i]} has a bad {side} child")
            table[i] = child
    if (features[modes != 0] < 0).any():
        raise node.fail("a negative feature id")

    weight_values, wide_weights = floats(node, prefix + "_weights")
    w_trees = np.asarray(node.attrs.get(prefix + "_treeids", []), dtype=np.int64)
    w_nodes = np.asarray(node.attrs.get(prefix + "_nodeids", []), dtype=np.int64)
    w_ids = np.asarray(node.attrs.get(prefix + "_ids", []), dtype=np.int64)
    if weight_values is None or not (
        len(w_trees) == len(w_nodes) == len(w_ids) == len(weight_values)
    ):
        raise node.fail(f"{prefix}_* attributes have different lengths")
    wide = wide_values or wide_weights
    dtype = np.float64 if wide else np.float32
    weights = np.zeros((count, outputs), dtype=dtype)
    present = np.zeros((count, outputs), dtype=bool)
    order = sorted(range(len(w_ids)), key=lambda j: (w_trees[j], w_nodes[j], j))
    for j in order:  # onnxruntime sorts weights by (tree, node) and keeps their order
        i = position.get((int(w_trees[j]), int(w_nodes[j])))
        if i is None:
            raise node.fail(f"a weight for missing node {w_nodes[j]} of tree {w_trees[j]}")
        if modes[i] != 0:
            continue  # onnxruntime ignores weights on branch nodes
        k = 0 if first_weight_only else int(w_ids[j])
        if not 0 <= k < outputs:
            raise node.fail(f"{prefix}_ids {w_ids[j]} is out of range for {outputs} outputs")
        if first_weight_only and present[i, 0]:
            continue  # one target: onnxruntime uses the first weight of each leaf only
        weights[i, k] = weights[i, k] + dtype(weight_values[j])
        present[i, k] = True
    leaves = np.flatnonzero(modes == 0)
    empty = [int(i) for i in leaves if not present[i].any()]
    if empty:
        raise node.fail(f"leaf {node_ids[empty[0]]} of tree {tree_ids[empty[0]]} has no weight")
    starts = [0] + [i for i in range(1, count) if tree_ids[i] != tree_ids[i - 1]]
    roots = np.asarray(starts, dtype=np.int32)  # onnxruntime: first node of each tree run
    return Ensemble(
        feature=np.where(modes != 0, features, 0).astype(np.int32),
        threshold=(thresholds if thresholds is not None else np.zeros(count)).astype(dtype),
        true_next=true_next,
        false_next=false_next,
        mode=modes,
        missing_true=missing_true,
        roots=roots,
        depths=tree_depths(node, roots, modes, true_next, false_next),
        weights=weights,
        present=present,
        wide=wide,
    )


def tree_depths(node: Node, roots, modes, true_next, false_next) -> np.ndarray:
    """Steps from a root to its deepest leaf, refusing cycles (a walk that never ends).

    Depth-first with memoised subtrees, so nodes shared by several parents cost nothing.
    """
    depth: dict[int, int] = {}
    for root in roots.tolist():
        stack, on_path = [(root, False)], set()
        while stack:
            i, expanded = stack.pop()
            if i in depth:
                continue
            if modes[i] == 0:
                depth[i] = 0
                continue
            children = (int(true_next[i]), int(false_next[i]))
            if expanded:
                on_path.discard(i)
                depth[i] = 1 + max(depth[c] for c in children)
                continue
            if any(c in on_path or c == i for c in children):
                raise node.fail("a tree has a cycle")
            on_path.add(i)
            stack.append((i, True))
            stack.extend((c, False) for c in children if c not in depth)
    return np.asarray([depth[r] for r in roots.tolist()], dtype=np.int32)
