"""Synthetic echo-scene data engine: physics-simulated (audio, ground truth) pairs in shards.

Main entry points:

* :func:`load_config` / :class:`DatagenConfig` -- the configuration (shipped default: ``datagen.yaml``)
* :func:`generate_scene` -- one scene as a dict of arrays
* :func:`run_datagen` -- a whole dataset: parallel, resumable, deterministic
* :func:`open_dataset` / :class:`SceneDataset` -- the numpy reader
* :mod:`.rosbag_io` -- scenes to rosbag2 and real recordings to shards
* :mod:`.torch_dataset` -- a ``torch.utils.data.Dataset`` over the shards

The sample schema is :data:`SCHEMA` (and ``docs/datagen.md``).
"""

from .config import DEFAULT_CONFIG_PATH, DatagenConfig, DatagenConfigError, config_from_dict, load_config
from .engine import run_datagen
from .scene import generate_scene, render_scene, sample_scene
from .shards import SCHEMA, DatasetError, SceneDataset, open_dataset

__all__ = [
    "DEFAULT_CONFIG_PATH", "DatagenConfig", "DatagenConfigError", "config_from_dict", "load_config",
    "run_datagen", "generate_scene", "render_scene", "sample_scene", "SCHEMA", "DatasetError",
    "SceneDataset", "open_dataset",
]
