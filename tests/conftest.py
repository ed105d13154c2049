import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# our message package and share dir live in the venv's prefix when no ROS setup.bash was sourced
prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
if sys.prefix not in prefixes:
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(prefixes + [sys.prefix])


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def uncertainty_bundle(tmp_path_factory):
    """A bundle for the robot_8mic ring (the shipped bundle's sweep, speaker and voxel crop) whose small, untrained
    student has a layout head and a depth uncertainty head: its graph gives ``depth_uncertainty``."""
    pytest.importorskip("onnxruntime")
    import torch

    from avperception.inference import load_bundle
    from avperception.models.student import StudentConfig, AudioStudent
    from avperception_train.learn.bundle_writer import write_bundle

    ref = load_bundle("default")
    cfg = StudentConfig(num_mics=ref.num_mics, dim=32, depth=1, heads=4, sam_k=4, decoder_width=16,
                        voxel_decoder="plan", echo_hop=4, layout_beams=60, layout_planes=True, uncertainty=True,
                        emitted=ref.emitted.tolist(), array=ref.array.name,
                        array_positions=ref.array.positions.tolist())
    torch.manual_seed(0)
    model = AudioStudent(cfg).eval()
    out = tmp_path_factory.mktemp("uncertainty") / "bundle"
    return write_bundle(model, out, speaker_position=ref.speaker_position, sweep_level_db=ref.sweep_level_db,
                        sweep_params=ref.sweep_params, voxel_center=ref.voxel_center, voxel_extent=ref.voxel_extent,
                        voxel_resolution=ref.voxel_resolution, array=ref.array, speed_of_sound=ref.speed_of_sound,
                        log=lambda _m: None)
