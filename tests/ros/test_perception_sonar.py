"""perception_node's learned half in-process: which bundle it loads on which array, and what it says when none fits."""


import pytest

import rclpy  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from avperception.inference.bundle import BUNDLES_DIR, BundleMismatch, default_bundle_path  # noqa: E402
from avperception.ros.perception_node import PerceptionNode  # noqa: E402




def node_with(ctx, **params):
    return PerceptionNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_the_default_bundle_runs_on_its_array(ctx):
    node = node_with(ctx, array="robot_8mic")
    try:
        assert node.sonar is not None and node._sonar_note == "on"
        assert node.sonar.bundle.path == default_bundle_path() and node.sonar.stats()["backend"].startswith("onnx")
    finally:
        node.destroy_node()


def test_the_default_bundle_is_the_one_shipped_for_the_nodes_array(ctx):
    shipped = sorted(p.parent.name for p in BUNDLES_DIR.glob("*/bundle.json"))
    assert "robot_8mic" in shipped
    for name in shipped:
        node = node_with(ctx, array=name)
        try:
            assert node._sonar_note == "on" and node.sonar.bundle.path == default_bundle_path(name)
            assert node.sonar.bundle.array.name == name
        finally:
            node.destroy_node()


def test_an_array_without_a_shipped_bundle_leaves_the_beamformer_running_and_says_why(ctx):
    node = node_with(ctx, array="minidsp_uma16")
    try:
        assert node.sonar is None
        assert node._sonar_note.startswith("off: no shipped model for this array") and "minidsp_uma16" in node._sonar_note
        assert "recipe" in node._sonar_note  # what to do about it
        assert node.pipeline.array.name == "minidsp_uma16"  # the beamformer half is up
    finally:
        node.destroy_node()


def test_an_explicit_bundle_that_does_not_fit_stops_the_node_naming_the_difference(ctx):
    with pytest.raises(BundleMismatch, match="mic"):
        node_with(ctx, **{"array": "respeaker_4mic", "sonar.model": str(default_bundle_path())})


def test_sonar_can_be_switched_off(ctx):
    node = node_with(ctx, **{"array": "robot_8mic", "sonar.enabled": False})
    try:
        assert node.sonar is None and "enabled is false" in node._sonar_note
    finally:
        node.destroy_node()
