"""Fixtures shared by the ROS tests."""

import os
import subprocess
from pathlib import Path

import pytest

import rclpy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def ctx():
    """An rclpy context of its own on a domain apart from other tests' (in-process nodes)."""
    c = rclpy.context.Context()
    rclpy.init(context=c, domain_id=100 + (os.getpid() + 37) % 100)
    yield c
    rclpy.shutdown(context=c)


@pytest.fixture()
def ros_env(tmp_path):
    """Processes started with ``start(*cmd)`` on a ROS domain of their own (localhost only), a listener node in
    this process, and the folder of their logs; the processes are stopped afterwards."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)  # isolated from anything else running here
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    procs = []

    def start(*cmd):
        log = open(tmp_path / f"proc{len(procs)}.log", "w")
        p = subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        procs.append((p, log))
        return p

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("test_listener", context=ctx)
    yield start, node, ctx, tmp_path
    node.destroy_node()
    rclpy.shutdown(context=ctx)
    for p, log in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
