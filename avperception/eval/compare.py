"""``avperception compare-bags A B``: two recordings of the node's outputs (before / after a model change) compared
ping by ping.

Each ``sonar/depth`` image of B is matched to the one of A with the same header stamp (within ``tol_s``, 1 ms),
and ``sonar/semantic`` likewise when both bags have it. Per ping, with A as the reference: AbsRel and δ1 of B's
depth over the pixels where both have a depth (:func:`avperception.eval.metrics.depth_metrics`), the largest
absolute difference (m), the pixels known in only one of them, and the fraction of pixels whose class agrees.
Totals: matched pings, pings only in A, only in B, the means over matched pings and the largest difference.
Identical outputs give AbsRel 0, δ1 1, class agreement 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .bagfiles import open_rosbag2
from .bagio import BagError, depth_to_metres, image_to_array, stamp_to_sec, typestore
from .metrics import depth_metrics

IMAGE = "sensor_msgs/msg/Image"


def _norm(topic: str) -> str:
    return "/" + topic.strip().lstrip("/")


def read_images(bag: str | Path, topic: str, depth: bool, ts=None) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Every ``sensor_msgs/Image`` on ``topic`` (leading slash optional), sorted by header stamp: ``(stamps (N,)
    float64 s, [(H, W) arrays])`` (depth: float32 metres, NaN unknown; else the labels), or None without that
    topic."""
    ts = ts if ts is not None else typestore()
    with open_rosbag2(bag) as reader:
        conns = [c for c in reader.connections if _norm(c.topic) == _norm(topic)]
        if not conns:
            return None
        bad = {c.msgtype for c in conns if c.msgtype != IMAGE}
        if bad:
            raise BagError(f"{bag}: {topic} carries {sorted(bad)}, not {IMAGE}")
        stamps, images = [], []
        for c, _, raw in reader.messages(connections=conns):
            msg = ts.deserialize_cdr(raw, c.msgtype)
            stamps.append(stamp_to_sec(msg.header.stamp))
            images.append(depth_to_metres(msg) if depth else image_to_array(msg))
    order = np.argsort(stamps, kind="stable")
    return np.asarray(stamps, dtype=np.float64)[order], [images[i] for i in order]


def match_stamps(a: np.ndarray, b: np.ndarray, tol_s: float) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` with ``|a[i] - b[j]| <= tol_s``, each index used once, nearest first; ``a`` and ``b``
    sorted ``(N,)``, ``(M,)``."""
    cand = []
    for i, k in enumerate(np.searchsorted(b, a)):
        for j in (int(k) - 1, int(k)):
            if 0 <= j < len(b) and abs(a[i] - b[j]) <= tol_s:
                cand.append((abs(a[i] - b[j]), i, j))
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in sorted(cand):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def _nearest(stamps: np.ndarray, t: float, tol_s: float) -> int | None:
    if len(stamps) == 0:
        return None
    k = int(np.argmin(np.abs(stamps - t)))
    return k if abs(stamps[k] - t) <= tol_s else None


def compare_depth(a: np.ndarray, b: np.ndarray) -> dict:
    """B's ``(H, W)`` depth against A's: ``abs_rel``, ``delta1`` (over the pixels where both are known),
    ``max_abs_diff`` (m), ``known_pixels``, ``known_in_one`` (pixels known in only one of them)."""
    if a.shape != b.shape:
        raise BagError(f"depth images of different shapes {a.shape} and {b.shape}")
    ka, kb = np.isfinite(a), np.isfinite(b)
    both = ka & kb
    m = depth_metrics(b[both], a[both]) if both.any() else {"abs_rel": math.nan, "delta1": math.nan}
    diff = np.abs(b[both].astype(np.float64) - a[both])
    return {"abs_rel": m["abs_rel"], "delta1": m["delta1"],
            "max_abs_diff": float(diff.max()) if diff.size else math.nan, "known_pixels": int(both.sum()),
            "known_in_one": int((ka ^ kb).sum())}


def compare_bags(a: str | Path, b: str | Path, topic: str = "sonar/depth",
                 semantic_topic: str | None = "sonar/semantic", tol_s: float = 1e-3) -> dict:
    """Compare the depth (and class) images of bags ``a`` and ``b`` ping by ping (see the module docstring).

    Returns ``{"a", "b", "topic", "semantic_topic" (None when a bag lacks it), "pings": [{"stamp", "abs_rel",
    "delta1", "max_abs_diff", "known_pixels", "known_in_one", "class_agreement"}], "only_a": [stamps], "only_b":
    [stamps], "totals": {...}}``.
    """
    ts = typestore()
    da, db = read_images(a, topic, True, ts), read_images(b, topic, True, ts)
    for bag, d in ((a, da), (b, db)):
        if d is None:
            raise BagError(f"{bag}: no topic {_norm(topic)} (record the node's outputs with avperception record)")
    sa = sb = None
    if semantic_topic:
        sa, sb = read_images(a, semantic_topic, False, ts), read_images(b, semantic_topic, False, ts)
        if sa is None or sb is None:
            sa = sb = None
    pairs = match_stamps(da[0], db[0], tol_s)
    pings = []
    for i, j in pairs:
        row = {"stamp": float(da[0][i]), **compare_depth(da[1][i], db[1][j]), "class_agreement": None}
        if sa is not None:  # the class images of the same ping, each matched to its depth's stamp
            ka, kb = _nearest(sa[0], da[0][i], tol_s), _nearest(sb[0], db[0][j], tol_s)
            if ka is not None and kb is not None and sa[1][ka].shape == sb[1][kb].shape:
                row["class_agreement"] = float(np.mean(sa[1][ka] == sb[1][kb]))
        pings.append(row)
    ia, ib = {i for i, _ in pairs}, {j for _, j in pairs}
    only_a = [float(t) for i, t in enumerate(da[0]) if i not in ia]
    only_b = [float(t) for j, t in enumerate(db[0]) if j not in ib]

    def mean(key):
        v = [p[key] for p in pings if p[key] is not None and np.isfinite(p[key])]
        return float(np.mean(v)) if v else None

    diffs = [p["max_abs_diff"] for p in pings if np.isfinite(p["max_abs_diff"])]
    totals = {"pings_a": len(da[0]), "pings_b": len(db[0]), "matched": len(pairs), "only_a": len(only_a),
              "only_b": len(only_b), "abs_rel_mean": mean("abs_rel"), "delta1_mean": mean("delta1"),
              "max_abs_diff": float(max(diffs)) if diffs else None, "class_agreement_mean": mean("class_agreement"),
              "identical_pings": sum(1 for p in pings if p["max_abs_diff"] == 0 and p["known_in_one"] == 0
                                     and p["class_agreement"] in (None, 1.0))}
    return {"a": str(a), "b": str(b), "topic": _norm(topic),
            "semantic_topic": _norm(semantic_topic) if sa is not None else None, "tol_s": tol_s, "pings": pings,
            "only_a": only_a, "only_b": only_b, "totals": totals}


def to_markdown(r: dict) -> str:
    """The comparison as markdown: totals, then one row per matched ping."""
    f = lambda v, n=4: "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{n}f}"  # noqa: E731
    t = r["totals"]
    lines = [f"# {r['topic']}: B against A", "", f"- A: `{r['a']}` ({t['pings_a']} pings)",
             f"- B: `{r['b']}` ({t['pings_b']} pings)",
             f"- matched by header stamp within {r['tol_s'] * 1e3:g} ms: {t['matched']} "
             f"({t['identical_pings']} identical); only in A: {t['only_a']}; only in B: {t['only_b']}",
             f"- classes: {r['semantic_topic'] or 'not compared (a bag has no semantic topic)'}", "",
             "| | AbsRel | δ1 | max abs diff (m) | class agreement |", "|---|---|---|---|---|",
             f"| mean over matched pings | {f(t['abs_rel_mean'])} | {f(t['delta1_mean'])} | {f(t['max_abs_diff'])} "
             f"(max) | {f(t['class_agreement_mean'])} |", "", "## Per ping", "",
             "| stamp (s) | AbsRel | δ1 | max abs diff (m) | known in one only (px) | class agreement |",
             "|---|---|---|---|---|---|"]
    for p in r["pings"]:
        lines.append(f"| {p['stamp']:.6f} | {f(p['abs_rel'])} | {f(p['delta1'])} | {f(p['max_abs_diff'])} | "
                     f"{p['known_in_one']} | {f(p['class_agreement'])} |")
    for name, key in (("A", "only_a"), ("B", "only_b")):
        if r[key]:
            lines += ["", f"Only in {name}: " + ", ".join(f"{s:.6f}" for s in r[key])]
    return "\n".join(lines) + "\n"


__all__ = ["compare_bags", "compare_depth", "match_stamps", "read_images", "to_markdown"]
