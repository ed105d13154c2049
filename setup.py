"""ament_python package: colcon builds it in a ROS 2 workspace; `pip install -e .` works too."""

from glob import glob

from setuptools import find_packages, setup

package_name = "avperception"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["avperception", "avperception.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
        ("share/" + package_name + "/config/arrays", glob("config/arrays/*.yaml")),
    ],
    package_data={"avperception.models": ["bundles/*/bundle.json", "bundles/*/model.onnx", "bundles/*/model.safetensors",
                                         "bundles/*/model.json"]},
    install_requires=["setuptools", "numpy", "scipy", "pyyaml"],
    extras_require={"sim": ["pyroomacoustics"], "capture": ["sounddevice"], "plots": ["matplotlib"],
                    "models": ["torch>=2.1", "safetensors>=0.4", "onnx>=1.15", "onnxruntime>=1.17"]},
    zip_safe=True,
    maintainer="avperception maintainers",
    maintainer_email="maintainers@avperception.dev",
    description="Microphone-array perception for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "avperception = avperception.cli:main",
            "avperception-run = avperception.ros.runner:main",
            "perception_node = avperception.ros.perception_node:main",
            "sim_audio_node = avperception.ros.sim_audio_node:main",
            "capture_node = avperception.ros.capture_node:main",
            "bag_player_node = avperception.ros.bag_player_node:main",
        ],
    },
)
