"""rosbag2 both ways: export scenes, read the bag back with rosbags, import audio + depth camera to shards."""

from __future__ import annotations

import numpy as np
import pytest

from avperception_train.datagen import open_dataset
from avperception_train.datagen.rosbag_io import (AUDIO_FRAME, TOPICS, BagError, export_bag, import_bag,
                                                  typestore)

pytest.importorskip("rosbags")


def test_exported_bag_holds_every_topic(dataset, tmp_path, small_cfg):
    from rosbags.highlevel import AnyReader

    from avperception.audio.pcm import from_audio_frame

    bag = tmp_path / "bag"
    res = export_bag(dataset, bag, [0, 1], storage="mcap", chunk_samples=512, encoding="S16LE")
    ds = open_dataset(dataset)
    with AnyReader([bag], default_typestore=typestore()) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        assert types[TOPICS["audio"]] == AUDIO_FRAME
        assert types[TOPICS["depth"]] == "sensor_msgs/msg/Image"
        assert types[TOPICS["voxels"]] == "sensor_msgs/msg/PointCloud2"
        assert types[TOPICS["sources"]] == "visualization_msgs/msg/MarkerArray"
        assert types[TOPICS["camera_info"]] == "sensor_msgs/msg/CameraInfo"
        chunks, clouds, depth = [], [], []
        for c, t, raw in r.messages():
            msg = r.deserialize(raw, c.msgtype)
            if c.topic == TOPICS["audio"]:
                chunks.append(from_audio_frame(msg))
            elif c.topic == TOPICS["voxels"]:
                clouds.append(np.frombuffer(bytes(msg.data), "<f4").reshape(-1, 3))
            elif c.topic == TOPICS["depth"]:
                depth.append(np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width))
    assert res["messages"][TOPICS["audio"]] == len(chunks) == 8  # 2048 samples in 512-sample chunks, 2 scenes
    assert [c.sequence for c in chunks] == list(range(8))
    s0 = ds[0]
    arr = small_cfg.array_geometry()
    assert chunks[0].data.shape[0] == arr.input_channels  # the device's channel layout, as a driver sends it
    audio0 = np.concatenate([arr.select_channels(c.data) for c in chunks[:4]], axis=1)
    np.testing.assert_allclose(audio0, s0["audio"], atol=1.0 / 32767 + 1e-7)  # S16LE quantisation
    assert chunks[1].stamp - chunks[0].stamp == pytest.approx(512 / 16000, abs=1e-6)
    np.testing.assert_array_equal(depth[0], s0["depth"])
    occ = s0["voxels"]
    assert len(clouds[0]) == occ.sum()
    # cloud points are voxel centres of occupied voxels (array frame)
    idx = np.floor((clouds[0] - s0["voxel_origin"]) / s0["voxel_size"]).astype(int)
    assert occ[idx[:, 2], idx[:, 1], idx[:, 0]].all()
    with pytest.raises(BagError, match="exists"):
        export_bag(dataset, bag)


@pytest.mark.parametrize("align, delay", [("start", 0.0), ("chirp", 0.031)])
def test_bag_round_trip_to_shards(dataset, tmp_path, small_cfg, align, delay):
    """Export scenes with a pinhole depth camera, import the bag: same audio, depth panorama and voxels."""
    from scipy.ndimage import binary_dilation

    bag = tmp_path / "bag"
    export_bag(dataset, bag, [0, 1, 2], storage="sqlite3", encoding="F32LE", camera_delay_s=delay)
    out = tmp_path / "imported"
    m = import_bag(bag, out, array=small_cfg.array, align=align, show_progress=False)
    assert m["source"] == "rosbag" and m["num_scenes"] == 3 and m["import"]["audio_gaps"] == 2
    gt, imp = open_dataset(dataset), open_dataset(out)
    for i in range(3):
        a, b = gt[i], imp[i]
        # audio: the same window, sample for sample (chirp alignment finds the emission despite the camera delay)
        np.testing.assert_array_equal(b["audio"], a["audio"])
        assert bool(b["active"]) == (align == "chirp")
        # depth panorama: known only inside the camera's view, equal to the ray-cast panorama there
        valid = np.isfinite(b["depth"])
        assert 300 < valid.sum() < 0.2 * valid.size
        rel = np.abs(b["depth"][valid] - a["depth"][valid]) / a["depth"][valid]
        assert np.median(rel) < 1e-4 and np.mean(rel < 0.01) > 0.95
        assert not b["has_semantic"] and not b["has_energy"] and np.all(b["semantic"] == 255)
        # voxels: occupied ones touch true solid voxels; voxels seen as free are truly free
        assert np.all(binary_dilation(a["voxels"])[b["voxels"]])
        assert not np.any(b["voxel_known"] & ~b["voxels"] & a["voxels"])
        assert b["voxel_known"].sum() > 100
        assert abs(float(b["stamp"]) - (1e9 + i + delay)) < 1e-3


def test_import_errors(dataset, tmp_path):
    bag = tmp_path / "bag"
    export_bag(dataset, bag, [0])
    with pytest.raises(BagError, match="no topic '/mic'"):
        import_bag(bag, tmp_path / "x", audio_topic="/mic", show_progress=False)
    with pytest.raises(BagError, match="bag not found"):
        import_bag(tmp_path / "nope", tmp_path / "x", show_progress=False)
    with pytest.raises(BagError, match="has 8 microphones but the audio has 6 channels"):  # the dataset's 4-mic array
        import_bag(bag, tmp_path / "x", array="robot_8mic", show_progress=False)
    with pytest.raises(BagError, match="already holds a dataset"):
        import_bag(bag, dataset, array="respeaker_4mic", show_progress=False)  # never over a synthetic dataset


def test_datagen_refuses_an_imported_dataset_dir(dataset, tmp_path, small_cfg):
    from avperception_train.datagen import DatagenConfigError, run_datagen

    bag = tmp_path / "bag"
    export_bag(dataset, bag, [0, 1])
    out = tmp_path / "imported"
    import_bag(bag, out, array=small_cfg.array, show_progress=False)
    with pytest.raises(DatagenConfigError, match="different source"):
        run_datagen(small_cfg, out, 2, show_progress=False, log=None)


def test_imported_recordings_train_on_what_the_camera_saw(dataset, tmp_path, small_cfg):
    """A student learns from an imported recording only what its depth camera saw: unknown voxels and the
    missing energy and classes are left out of the loss, not taught as empty; and `camera_fov_deg` cuts a
    synthetic scene to the same view the import gives."""
    import torch

    from avperception.models.student import AudioStudent, small_config
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.losses import prediction_loss

    bag = tmp_path / "bag"
    export_bag(dataset, bag, [0, 1], storage="sqlite3", encoding="F32LE")
    out = tmp_path / "imported"
    import_bag(bag, out, array=small_cfg.array, show_progress=False)
    raw = open_dataset(out)
    ds = InMemoryScenes(out, "train")
    for i in range(2):
        item = ds[i]
        v = item["voxels"].numpy()
        np.testing.assert_array_equal(np.isfinite(v), raw[i]["voxel_known"])
        np.testing.assert_array_equal(v[raw[i]["voxel_known"]], raw[i]["voxels"][raw[i]["voxel_known"]])
        assert torch.isnan(item["energy"]).all()
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    info = ds.info
    sc = small_config(num_mics=info.num_mics, sample_rate=info.sample_rate, num_samples=info.num_samples,
                      pano_h=info.pano_shape[0], pano_w=info.pano_shape[1], voxel_size=info.voxel_size,
                      dim=32, depth=1, decoder_width=16)
    pred = AudioStudent(sc)(batch["audio"])
    loss, parts = prediction_loss(pred, batch)
    assert torch.isfinite(loss) and set(parts) == {"depth", "voxels"}  # no classes, no energy in a recording
    # the synthetic cut with the pinhole's field of view sees where the import has depth
    ph = small_cfg.pinhole
    fov = [2 * np.degrees(np.arctan(ph.width / 2 / ph.fx)), 2 * np.degrees(np.arctan(ph.height / 2 / ph.fy))]
    view = InMemoryScenes(dataset, "train", max_samples=1, camera_fov_deg=fov).camera.view
    seen = np.isfinite(raw[0]["depth"])
    assert (view & seen).sum() / (view | seen).sum() > 0.85
