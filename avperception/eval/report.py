"""The replay evaluation's report: ``metrics.json``, ``summary.md``, PNG plots and a self-contained ``index.html``.

:func:`write_report` takes what :func:`avperception.eval.replay.replay_eval` returns. The HTML page embeds every
picture as a base64 ``data:`` URI and its style inline, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from ..bench.common import markdown_table

PLOTS = (("error_over_time.png", "Depth error over time"), ("latency_hist.png", "Latency per ping"),
         ("class_iou.png", "IoU per class"), ("doa_cdf.png", "DOA error CDF"),
         ("samples.png", "Predictions beside the truth"))

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%;
border:1px solid #eee;margin:.4em 0}.note{color:#555}code{background:#f6f6f6;padding:0 .2em}"""


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


METRIC_COLUMNS = (("pings", "pings"), ("delta1_mean", "depth δ1"), ("abs_rel_mean", "AbsRel"), ("rmse_mean", "RMSE m"),
                  ("near_pixels", "px < 0.5 m"), ("false_far_rate", "false far"), ("near_recall", "near recall"),
                  ("false_near_rate", "false near"),
                  ("ause_mean", "AUSE AbsRel"), ("ause_random_mean", "random AUSE"),
                  ("near_bound_false_far_rate", "near bound false far"),
                  ("near_bound_false_near_rate", "near bound false near"), ("confident_kept", "confident kept"),
                  ("confident_delta1", "confident δ1"), ("class_acc_mean", "class acc."),
                  ("miou", "mIoU"), ("voxel_iou_mean", "voxel IoU"), ("infer_ms_median", "inference ms p50"),
                  ("latency_ms_p99", "latency ms p99"))


def tables(m: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The report's tables as ``name -> (header, rows)``: overall, per segment, IoU per class, skipped, stream."""
    o = m["overall"]
    out = {}
    out["overall"] = ([c[1] for c in METRIC_COLUMNS] + ["DOA p50 deg", "DOA p90 deg"],
                      [[_fmt(o.get(k)) for k, _ in METRIC_COLUMNS]
                       + [_fmt(o.get("doa_error_deg_median"), 1), _fmt(o.get("doa_error_deg_p90"), 1)]])
    out["segments"] = (["segment", "epoch", "t s"] + [c[1] for c in METRIC_COLUMNS],
                       [[str(s["segment"]), str(s["epoch"]), f"{s['t_start']:.1f}-{s['t_end']:.1f}"]
                        + [_fmt(s.get(k)) for k, _ in METRIC_COLUMNS] for s in m["segments"]])
    out["classes"] = (["class", "IoU"], [[c, _fmt(v)] for c, v in zip(m["classes"], o.get("iou_per_class") or [])])
    from .replay import SKIP_TEXT

    rows = [[k, str(v), SKIP_TEXT.get(k, "")] for k, v in m["skipped"].items()]
    rows += [[f"unknown_topic {t}", str(n), "messages on a topic the evaluation does not read"]
             for t, n in m["unknown_topics"].items()]
    out["skipped"] = (["what", "count", "why"], rows)
    st = m["stream"]
    ev = [[e["kind"], f"{e['t']:.2f}",
           f"{e['seconds']:.3f} s missing" if e["kind"] == "gap" else f"stamp {e['from_stamp']:.3f} -> {e['to_stamp']:.3f}"]
          for e in m["events"]]
    out["stream"] = (["pings aligned", "found on the direct path", "audio gaps", "overlaps", "clock jumps",
                      "lost messages (sequence)"],
                     [[str(st["aligned"]), str(st["detected"]), str(st["gaps"]), str(st["overlaps"]),
                       str(st["clock_resets"]), str(st["lost_messages"])]])
    out["events"] = (["event", "t s (bag)", "what"], ev)
    return out


def summary_markdown(m: dict) -> str:
    t = tables(m)
    sp = m["speed"]
    x = sp.get("x_real_time")
    parts = [f"# Replay evaluation: `{m['bag']}`", "",
             f"Model `{m['model']}` ({m['backend']}, {m['settings']['threads']} thread(s)); audio `{m['topics']['audio']}` "
             f"({m['topics']['audio_type']}), pings `{m['topics']['pings']}`, truth "
             f"{', '.join(f'`{k}` ({v})' for k, v in m['topics']['truth'].items()) or 'none'}"
             + (f", camera `{m['topics']['camera_depth']}`" if m['topics']['camera_depth'] else "") + ".",
             f"{sp['audio_s']:.1f} s of audio in {sp['wall_s']:.1f} s"
             + (f" ({x:.1f}x real time)." if x else "."), ""]
    for n in m["notes"]:
        parts.append(f"- {n}")
    parts += ["", "## Overall", "", markdown_table(*t["overall"]), "", "## Per segment", "", markdown_table(*t["segments"]),
              "", "## IoU per class", "", markdown_table(*t["classes"]), "", "## Skipped", "",
              markdown_table(*t["skipped"]) if t["skipped"][1] else "Nothing was skipped.", "", "## Stream", "",
              markdown_table(*t["stream"]), ""]
    if t["events"][1]:
        parts += [markdown_table(*t["events"]), ""]
    parts += ["## How the numbers are computed", "",
              "Per ping: depth δ1 (fraction of pixels with max(p/g, g/p) < 1.25), AbsRel and RMSE over the pixels with "
              "a true depth; class accuracy over labelled pixels; voxel IoU of the occupied voxels. Means are over the "
              "pings that have that truth; mIoU and IoU per class pool every ping's confusion matrix. False far: of "
              "the pixels within 0.5 m, the share predicted beyond 1 m; near recall: of those within 1 m, the share "
              "predicted within 1.5 m (both pooled over every ping's pixels). AUSE AbsRel: the area between the "
              "sparsification curve of the depth uncertainty (leave out the most uncertain pixels in 20 steps, score "
              "the rest) and that of the true errors, 0 for a perfect ranking; random AUSE: the same for a random "
              "order. Latency: from "
              "the audio message that completes a ping's window to its outputs decoded. DOA: per true source, the "
              "angle to the nearest direction the beamformer found in each frame.", ""]
    parts += ["## Plots", ""] + [f"![{title}]({name})" for name, title in PLOTS] + [""]
    return "\n".join(parts)


def make_plots(m: dict, out: Path) -> list[str]:
    """The PNGs of :data:`PLOTS` under ``out``; returns the names written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    written = []
    pings = m["pings"]

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(9, 3.2))
    t = np.array([p["t"] for p in pings], dtype=float)
    for key, label in (("delta1", "δ1"), ("abs_rel", "AbsRel"), ("voxel_iou", "voxel IoU")):
        v = np.array([np.nan if p.get(key) is None else p[key] for p in pings], dtype=float)
        ax.plot(t, v, ".-", ms=3, lw=0.8, label=label)
    for s in m["segments"][1:]:
        ax.axvline(s["t_start"], color="0.8", lw=0.8)
    for e in m["events"]:
        ax.axvline(e["t"], color="r" if e["kind"] == "clock_jump" else "orange", lw=1.0, ls="--")
    ax.set_xlabel("bag time (s)")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("per ping (grey: segments, dashed: gaps orange, clock jumps red)", fontsize=9)
    save(fig, "error_over_time.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    lat = [p["latency_ms"] for p in pings]
    inf = [p["infer_ms"] for p in pings]
    if lat:
        bins = np.linspace(0, max(max(lat), 1.0) * 1.05, 30)
        ax.hist(lat, bins=bins, alpha=0.7, label="latency")
        ax.hist(inf, bins=bins, alpha=0.7, label="inference")
        ax.legend(fontsize=8)
    ax.set_xlabel("ms per ping")
    save(fig, "latency_hist.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    iou = [np.nan if v is None else v for v in (m["overall"].get("iou_per_class") or [])]
    ax.bar(m["classes"][: len(iou)], iou, color="tab:green")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    save(fig, "class_iou.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    e = np.sort([x for d in m.get("_doa", []) for x in d["errors"]])
    if e.size:
        ax.plot(e, np.arange(1, e.size + 1) / e.size)
    else:
        ax.text(0.5, 0.5, "no DOA scored (no source truth,\nor the beamformer was not run)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("DOA error (deg)")
    ax.set_ylabel("fraction")
    ax.set_xlim(0, 180)
    save(fig, "doa_cdf.png")

    samples = m.get("_samples", [])
    n = max(1, len(samples))
    fig, axes = plt.subplots(n, 4, figsize=(12, 1.9 * n + 0.4), squeeze=False)
    for i, s in enumerate(samples):
        pred = s["pred_camera"] if s.get("pred_camera") is not None else s["depth"]
        panels = ((pred, f"ping {s['ping']} depth (δ1 {_fmt(s['delta1'])})", "turbo_r"),
                  (s["true_depth"], "true depth", "turbo_r"),
                  (s["labels"], "classes", "tab10"), (s["true_labels"], "true classes", "tab10"))
        for ax, (img, title, cmap) in zip(axes[i], panels):
            ax.set_axis_off()
            ax.set_title(title, fontsize=8)
            if img is None:
                ax.text(0.5, 0.5, "no truth", ha="center", va="center", transform=ax.transAxes)
                continue
            a = np.asarray(img, dtype=float)
            if cmap == "tab10":
                a = np.where(a == 255, np.nan, a)
                ax.imshow(a, cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
            else:
                ax.imshow(a, cmap=cmap, vmin=0, vmax=6, interpolation="nearest")
    if not samples:
        axes[0, 0].text(0.5, 0.5, "no ping scored", transform=axes[0, 0].transAxes)
        for ax in axes[0]:
            ax.set_axis_off()
    save(fig, "samples.png")
    return written


def index_html(m: dict, out: Path) -> str:
    """One page with every table and every plot embedded (data URIs, inline CSS, no links out)."""
    t = tables(m)

    def table(name: str) -> str:
        header, rows = t[name]
        if not rows:
            return '<p class="note">none</p>'
        h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f'<table id="table-{name}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'

    sp = m["speed"]
    x = sp.get("x_real_time")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in m["notes"])
    imgs = []
    for name, title in PLOTS:
        p = out / name
        if p.exists():
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            imgs.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(title)}</figcaption></figure>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Replay evaluation</title><style>{_CSS}</style></head>
<body>
<h1>Replay evaluation</h1>
<p><code>{html.escape(m['bag'])}</code>: model <code>{html.escape(m['model'])}</code> ({html.escape(str(m['backend']))}),
{sp['audio_s']:.1f} s of audio in {sp['wall_s']:.1f} s{f' ({x:.1f}x real time)' if x else ''}.</p>
<ul>{notes}</ul>
<section id="overall"><h2>Overall</h2>{table('overall')}</section>
<section id="segments"><h2>Per segment</h2>{table('segments')}</section>
<section id="classes"><h2>IoU per class</h2>{table('classes')}</section>
<section id="skipped"><h2>Skipped</h2>{table('skipped')}</section>
<section id="stream"><h2>Stream</h2>{table('stream')}{table('events')}</section>
<section id="plots"><h2>Plots</h2>{''.join(imgs)}</section>
</body></html>
"""


def write_report(m: dict, out: str | Path) -> Path:
    """``metrics.json``, ``summary.md``, the plots and ``index.html`` under ``out``."""
    from .replay import dumps

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(dumps(m))
    make_plots(m, out)
    (out / "summary.md").write_text(summary_markdown(m))
    (out / "index.html").write_text(index_html(m, out))
    return out
