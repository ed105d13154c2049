"""Benchmarks: speed of the beamformers against other libraries, DOA accuracy in simulated rooms,
and timing of the torch feature front-end.

Run them with ``avperception bench beamforming|doa|features`` or the scripts in ``bench/``.
They print their numbers (and ratios against the peers measured in the same run);
nothing here asserts a timing.
"""
