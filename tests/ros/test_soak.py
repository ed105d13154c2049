"""A short soak: perception_node fed at 3x real time in bursts keeps publishing, drops what it cannot keep up
with (counted) and keeps its memory (the 10-minute version is `avperception bench soak`)."""

import numpy as np

from avperception.bench.soak import run


def test_an_overloaded_node_stays_up_with_flat_memory():
    res = run(minutes=0.3, speed=3.0, burst=True, report_s=6.0, warmup_s=6.0)
    p = res["periods"]
    assert len(p) >= 2 and res["depth_images"] > 20, res
    assert p[-1]["pings_aligned"] > p[0]["pings_aligned"]  # still working at the end
    assert abs(res["rss_growth_mb"]) < 40, res  # bounded queues: no growth with the overload
    assert all(np.isfinite(x["ping_latency_ms_median"]) for x in p)
