"""Fixtures shared by the ROS tests."""

import os

import pytest

import rclpy


@pytest.fixture()
def ctx():
    """An rclpy context of its own on a domain apart from other tests' (in-process nodes)."""
    c = rclpy.context.Context()
    rclpy.init(context=c, domain_id=100 + (os.getpid() + 37) % 100)
    yield c
    rclpy.shutdown(context=c)
