"""Scoring the learned outputs on a continuous simulated stream, as the node would produce them.

:func:`score_stream` feeds a pinging robot's stream (the training package's
``ActiveTrajectory``) through :class:`~avperception.sonar.pipeline.SonarPipeline` in driver-sized chunks with
each ping's onset announced, and scores every aligned window's outputs against the truth rendered for that ping.
The offline demo, ``avperception bench sonar-quality`` and the docs' live numbers come from it.
"""

from __future__ import annotations

import numpy as np

from .metrics import class_accuracy, depth_metrics, voxel_iou
from .safety import CONFIDENT_RATES, kept_counts, kept_metrics, named_rates, pooled_metrics, safety_counts


def score_outputs(out, depth: np.ndarray, semantic: np.ndarray, occupancy: np.ndarray,
                  confident_max_rel_std: float = 0.0) -> dict:
    """One ping's scores: depth (delta1, AbsRel, RMSE), class accuracy over labelled pixels, voxel IoU; the
    pixel counts behind the safety rates (``_safety``, :func:`~.safety.safety_counts`, pooled by
    :func:`summarize_scores`); and for outputs with a depth uncertainty and ``confident_max_rel_std`` above 0, the
    confident depth the node publishes at that threshold: the share of the known pixels it keeps and its delta1
    (``confident_kept``, ``confident_delta1``; counts in ``_kept``)."""
    d = depth_metrics(out.depth, depth)
    rec = {"delta1": d["delta1"], "abs_rel": d["abs_rel"], "rmse": d["rmse"],
           "class_acc": class_accuracy(out.labels, semantic), "voxel_iou": voxel_iou(out.occupancy, occupancy),
           "_safety": safety_counts(out.depth, depth, semantic)}
    if confident_max_rel_std > 0 and out.depth_uncertainty is not None:
        from ..sonar.products import confident_depth

        rec["_kept"] = kept_counts(confident_depth(out.depth, out.depth_uncertainty, confident_max_rel_std), depth)
        k = kept_metrics(rec["_kept"])
        rec["confident_kept"], rec["confident_delta1"] = k["kept"], k["delta1"]
    return rec


def array_pose(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` of the array in the room (odom) frame from a trajectory pose ``(4,)``: x, y, height, yaw."""
    from ..dsp.grid import rpy_matrix

    x, y, z, yaw = (float(v) for v in pose)
    return rpy_matrix(0.0, 0.0, np.degrees(yaw)), np.array([x, y, z])


def score_stream(traj, pings: int, config=None, start_ping: int = 0, chunk: int = 1024, announce: bool = True,
                 progress: bool = False, bundle=None) -> tuple[list[dict], object]:
    """Stream ``pings`` pings of ``traj`` through a :class:`SonarPipeline`; returns ``(records, pipeline)``.

    Each record holds the ping index, its scores (:func:`score_outputs`, the confident depth at the pipeline's
    ``confident_max_rel_std``), the onset correction the alignment made,
    and the outputs and truth (``out``, ``truth``). ``announce``: a Ping per onset (else the pipeline must find
    them on the direct path). With ``config.average_pings`` above 1 the pipeline is told the array's pose at each
    ping, as the node reads it from TF in ``sonar.still_frame``.
    """
    from ..sonar.pipeline import SonarPipeline

    fs = traj.fs
    sonar = SonarPipeline(traj.array, config, fs, ping_period_s=1.0 / traj.ping_rate_hz, bundle=bundle)
    truth: dict[int, object] = {}
    records: list[dict] = []
    pending = np.zeros((traj.array.num_mics, 0), np.float32)
    sent = start_ping * traj.period
    for seg in traj.segments(start_ping, pings):
        truth[seg.onset_sample] = seg
        if sonar.config.average_pings > 1 and sonar.config.still_frame:
            sonar.pose = array_pose(seg.pose)
        if announce:
            sonar.push_ping(seg.onset_sample / fs, seg.index, True)
        pending = np.concatenate([pending, seg.audio], axis=1)
        while pending.shape[1] >= chunk:  # the stream as a driver delivers it
            sonar.push_audio(pending[:, :chunk], sent / fs, sent // chunk)
            pending, sent = pending[:, chunk:], sent + chunk
            for w, o in sonar.pop(newest_only=False):
                near = [k for k in truth if abs(k - w.onset_index - start_ping * traj.period) <= 2]
                if not near:
                    continue
                t = truth.pop(near[0])
                records.append({"ping": t.index, "correction": int(w.correction), "out": o, "truth": t,
                                **score_outputs(o, t.depth, t.semantic, t.occupancy,
                                                sonar.config.confident_max_rel_std)})
        if progress:
            print(f"\rping {seg.index + 1 - start_ping}/{pings}", end="", flush=True)
    if progress:
        print()
    if not records:
        raise RuntimeError(f"no ping was aligned ({sonar.stats()})")
    return records, sonar


def summarize_scores(records: list[dict]) -> dict:
    """Means over the pings scored, the worst onset correction and the inference times; the safety rates over the
    pings' pixels pooled (``false_far_rate``: of the pixels within 0.5 m, the share reported beyond 1 m;
    ``near_recall``; ``false_near_rate``: of the pixels beyond 2 m, the share reported within 1 m), and where the
    pings have a confident depth, its scores pooled the same way (``confident_kept``, ``confident_delta1``,
    ``confident_abs_rel``, ``confident_false_far_rate``). A rate no pixel qualifies for is None."""
    col = {k: np.array([r[k] for r in records], dtype=float) for k in ("delta1", "abs_rel", "voxel_iou", "class_acc")}
    inf = np.array([r["out"].infer_ms for r in records])
    out = {"scored": len(records),
           "depth_delta1_mean": float(np.nanmean(col["delta1"])),
           "depth_abs_rel_mean": float(np.nanmean(col["abs_rel"])),
           "class_accuracy_mean": float(np.nanmean(col["class_acc"])),
           "voxel_iou_mean": float(np.nanmean(col["voxel_iou"])),
           "onset_correction_max_samples": int(max(abs(r["correction"]) for r in records)),
           "inference_ms_median": float(np.median(inf)), "inference_ms_p99": float(np.percentile(inf, 99))}
    safety = pooled_metrics(records, "_safety")
    out.update(named_rates(safety, ("false_far_rate", "near_recall", "false_near_rate")))
    out["near_pixels"] = safety.get("near_pixels", 0)
    kept = pooled_metrics(records, "_kept", kept_metrics)
    if kept:  # pings with a confident depth
        out.update(named_rates(kept, CONFIDENT_RATES, "confident_"))
    return out


def describe_safety(summary: dict) -> str:
    """One line on :func:`summarize_scores`' safety rates and confident depth, for the terminal."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    n = summary["near_pixels"]
    text = (f"false far {pct(summary['false_far_rate'])} (of {n} pixels within 0.5 m)" if n else
            "no pixel within 0.5 m (no false-far rate)")
    if "confident_kept" in summary:
        d1 = summary["confident_delta1"]
        text += (f"; confident depth: {pct(summary['confident_kept'])} of the view kept, delta1 "
                 f"{'-' if d1 is None else f'{d1:.3f}'}")
    return text
