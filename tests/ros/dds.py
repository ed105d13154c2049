"""Helpers of the DDS tests: spin a listener until a condition holds, the started processes' logs."""

import time


def spin_until(node, ctx, cond, timeout):
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and not cond():
        ex.spin_once(timeout_sec=0.05)
    ex.remove_node(node)
    return cond()


def logs(tmp_path):
    return "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("proc*.log")))
