"""ROS 2 nodes and message conversions: the only part of avperception that imports rclpy."""
