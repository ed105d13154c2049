"""Publishers of the learned outputs (one set per aligned ping), shared by the nodes that run a model bundle.

Topics (all stamped with the ping's onset, frame = the array frame unless said):
    sonar/depth             sensor_msgs/Image 32FC1   depth panorama, metres, NaN unknown (REP 118)
    sonar/depth_color       sensor_msgs/Image rgb8    the same, coloured (near bright)
    sonar/depth_uncertainty sensor_msgs/Image 32FC1   the depth's standard deviation per pixel, metres, NaN unknown
                                                      (only for a bundle whose model has an uncertainty head)
    sonar/depth_near_bound  sensor_msgs/Image 32FC1   the range each pixel's surface is nearer than with probability
                                                      ``sonar.near_bound_quantile`` (same bundles; 0: not published)
    sonar/depth_confident   sensor_msgs/Image 32FC1   the depth where its standard deviation is at most
                                                      ``sonar.confident_max_rel_std`` of it, NaN elsewhere (same
                                                      bundles; 0: not published)
    sonar/depth_confident_color sensor_msgs/Image rgb8 the same, coloured as sonar/depth_color, the rest black
    sonar/semantic          sensor_msgs/Image mono8   class per pixel (bundle's class list)
    sonar/semantic_color    sensor_msgs/Image rgb8    the bundle's class colours
    sonar/points            sensor_msgs/PointCloud2   the depth panorama as 3-D points: x y z, label (uint8), rgb
                                                      (``sonar.points_confident``: the confident depth's pixels only)
    sonar/occupancy         sensor_msgs/PointCloud2   centres of the occupied voxels
    sonar/occupancy_markers visualization_msgs/MarkerArray  the occupied voxels one can see (a free face) as cubes
    sonar/occupancy_grid    nav_msgs/OccupancyGrid    the voxels of a height band collapsed to a floor plan (Nav2)
    sonar/pinhole/depth     sensor_msgs/Image 32FC1   the depth reprojected on the ``grid`` pinhole camera (z-depth)
    sonar/pinhole/camera_info sensor_msgs/CameraInfo  its intrinsics (frame ``grid.camera_frame_id``)
"""

from __future__ import annotations

import functools

import numpy as np
from nav_msgs.msg import OccupancyGrid
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from ..config import GridConfig, SonarConfig
from ..sonar import products
from . import conversions as conv


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 -> ``(N,)`` float32 whose bits are 0x00RRGGBB (PointCloud2's ``rgb`` field, as RViz reads it)."""
    c = np.asarray(colors, dtype=np.uint32).reshape(-1, 3)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype(np.uint32).view(np.float32)


class SonarPublishers:
    """Creates the ``sonar/*`` publishers on ``node`` and turns one :class:`SonarOutputs` into messages."""

    def __init__(self, node: Node, bundle, sonar: SonarConfig, grid: GridConfig, frame_id: str) -> None:
        self.bundle = bundle
        self.cfg = sonar
        self.frame_id = frame_id
        self.camera_frame_id = grid.camera_frame_id
        self.rays = bundle.panorama_grid().vectors
        self.colors = np.asarray(bundle.class_colors, dtype=np.uint8)
        self.voxel_size = np.asarray(bundle.voxel_extent, dtype=np.float64) / np.asarray(bundle.voxel_resolution)
        products.depth_colors(np.zeros((1, 1), np.float32))  # loads the colour map now, not on the first ping
        self.pinhole = None
        if sonar.pinhole:
            self.pinhole = products.PinholeReprojection(bundle.pano_shape, grid.width, grid.height, grid.fx, grid.fy,
                                                        grid.cx, grid.cy, grid.camera_rpy_deg, bundle.el_min_deg,
                                                        bundle.el_max_deg)
            self.grid = grid
        q = qos_profile_sensor_data
        self.depth = node.create_publisher(Image, "sonar/depth", q)
        self.depth_color = node.create_publisher(Image, "sonar/depth_color", q)
        self.depth_uncertainty = (node.create_publisher(Image, "sonar/depth_uncertainty", q)
                                  if bundle.has_depth_uncertainty else None)
        self.depth_near_bound = (node.create_publisher(Image, "sonar/depth_near_bound", q)
                                 if bundle.has_depth_uncertainty and sonar.near_bound_quantile > 0 else None)
        confident = bundle.has_depth_uncertainty and sonar.confident_max_rel_std > 0
        self.depth_confident = node.create_publisher(Image, "sonar/depth_confident", q) if confident else None
        self.depth_confident_color = (node.create_publisher(Image, "sonar/depth_confident_color", q)
                                      if confident else None)
        if sonar.points_confident and not bundle.has_depth_uncertainty:
            node.get_logger().warning("sonar.points_confident: the bundle's model has no depth uncertainty, so "
                                      "sonar/points carries every pixel's depth")
        self.semantic = node.create_publisher(Image, "sonar/semantic", q)
        self.semantic_color = node.create_publisher(Image, "sonar/semantic_color", q)
        self.points = node.create_publisher(PointCloud2, "sonar/points", q)
        self.occupancy = node.create_publisher(PointCloud2, "sonar/occupancy", q)
        self.occupancy_markers = node.create_publisher(MarkerArray, "sonar/occupancy_markers", 10)
        self.occupancy_grid = node.create_publisher(OccupancyGrid, "sonar/occupancy_grid", 10)
        self.pinhole_depth = node.create_publisher(Image, "sonar/pinhole/depth", q)
        self.camera_info = node.create_publisher(CameraInfo, "sonar/pinhole/camera_info", q)
        if self.pinhole is not None:
            self._camera_tf(node, grid)

    def _camera_tf(self, node: Node, grid: GridConfig) -> None:
        """The pinhole camera's optical frame in the array frame, on /tf_static (depth_image_proc needs it)."""
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            node.get_logger().warning("tf2_msgs is not installed: the pinhole camera's frame is not published on "
                                      "/tf_static")
            return
        from rclpy.qos import DurabilityPolicy, QoSProfile

        from ..dsp.grid import OPTICAL_TO_BODY, rpy_matrix

        pub = node.create_publisher(TFMessage, "/tf_static", QoSProfile(depth=1,
                                                                          durability=DurabilityPolicy.TRANSIENT_LOCAL))
        rot = rpy_matrix(*grid.camera_rpy_deg) @ OPTICAL_TO_BODY
        pub.publish(conv.tf_message([conv.transform_msg(self.frame_id, self.camera_frame_id, (0.0, 0.0, 0.0), rot,
                                                        node.get_clock().now().nanoseconds * 1e-9)]))
        self._tf_static = pub

    def publish(self, out, everything: bool = False) -> int:
        """Publish the outputs of one ping (``out.stamp`` = its onset) on every topic someone subscribes to
        (``everything``: on all of them); returns how many messages went out. A message nobody listens to is not
        built: the cubes alone cost a few milliseconds."""
        t, f, b = out.stamp, self.frame_id, self.bundle

        def wanted(pub) -> bool:
            return everything or pub.get_subscription_count() > 0

        # built once a ping, for sonar/depth_confident, its colours and sonar/points
        confident = functools.cache(lambda: products.confident_depth(out.depth, out.depth_uncertainty,
                                                                     self.cfg.confident_max_rel_std))

        outputs = [(self.depth, lambda: conv.array_to_image(out.depth.astype(np.float32), t, f)),
                   (self.depth_color, lambda: conv.array_to_image(products.depth_colors(out.depth), t, f)),
                   (self.semantic, lambda: conv.array_to_image(out.labels.astype(np.uint8), t, f)),
                   (self.semantic_color, lambda: conv.array_to_image(
                       products.label_colors(out.labels, self.colors), t, f)),
                   (self.points, lambda: self._points(out, confident)),
                   (self.occupancy_grid, lambda: self._plan(out))]
        if out.depth_uncertainty is not None:  # their publishers exist for bundles with an uncertainty head
            outputs += [
                (self.depth_uncertainty, lambda: conv.array_to_image(out.depth_uncertainty.astype(np.float32), t, f)),
                (self.depth_near_bound, lambda: conv.array_to_image(products.depth_near_bound(
                    out.depth, out.depth_uncertainty, self.cfg.near_bound_quantile), t, f)),
                (self.depth_confident, lambda: conv.array_to_image(confident(), t, f)),
                (self.depth_confident_color, lambda: conv.array_to_image(products.depth_colors(confident()), t, f))]
        sent = 0
        for pub, make in outputs:
            if pub is not None and wanted(pub):
                pub.publish(make())
                sent += 1
        if wanted(self.occupancy):
            self.occupancy.publish(conv.points_to_cloud(
                products.voxel_centres(out.occupancy, b.voxel_center, b.voxel_extent), t, f))
            sent += 1
        if wanted(self.occupancy_markers):  # the visible cubes only: Python builds each point of a marker
            shell = products.voxel_centres(products.surface_voxels(out.occupancy), b.voxel_center, b.voxel_extent)
            self.occupancy_markers.publish(conv.cube_markers(shell, self.voxel_size, t, f))
            sent += 1
        if self.pinhole is not None and (wanted(self.pinhole_depth) or wanted(self.camera_info)):
            g = self.grid
            self.pinhole_depth.publish(conv.array_to_image(self.pinhole(out.depth), t, self.camera_frame_id))
            self.camera_info.publish(conv.camera_info_msg(g.width, g.height, g.fx, g.fy, g.cx, g.cy, t,
                                                          self.camera_frame_id))
            sent += 2
        return sent

    def _points(self, out, confident):
        """``sonar/points``: every pixel's depth, or with ``sonar.points_confident`` the confident depth's
        (``confident()``, the ping's, built on first use)."""
        depth = out.depth
        if self.cfg.points_confident and self.cfg.confident_max_rel_std > 0 and out.depth_uncertainty is not None:
            depth = confident()
        pts, lab = products.depth_points(depth, self.rays, out.labels, self.cfg.points_max_range_m)
        rgb = pack_rgb(self.colors[np.minimum(lab, len(self.colors) - 1)]) if len(pts) else np.zeros(0, np.float32)
        return conv.points_to_cloud(pts, out.stamp, self.frame_id, {"label": lab.astype(np.uint8), "rgb": rgb})

    def _plan(self, out):
        b = self.bundle
        plan = products.occupancy_slice(out.occupancy, b.voxel_center, b.voxel_extent, self.cfg.plan_z_min_m,
                                        self.cfg.plan_z_max_m)
        return conv.occupancy_grid_msg(plan.data, plan.origin, plan.resolution, out.stamp, self.frame_id)
