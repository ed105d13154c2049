"""avperception: microphone-array perception for ROS 2."""

__version__ = "0.1.0"
