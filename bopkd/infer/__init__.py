"""Inference (``bopkd predict``): poses of a trained network on a BOP test split, written as a BOP'19 CSV
with a JSON sidecar.

- :mod:`bopkd.infer.predict`: the command's entry point (checkpoint -> CSV + sidecar).
- :mod:`bopkd.infer.loop`: whole images or crops (GT boxes or detections) through the network.
- :mod:`bopkd.infer.poses`: decoded keypoints -> EPnP-RANSAC poses in the original image.
- :mod:`bopkd.infer.naming`: protocol and result-file name.
- :mod:`bopkd.infer.export`: per-image times, the toolkit's per-image limit, the CSV writer.
- :mod:`bopkd.infer.record`: the sidecar, :class:`~bopkd.infer.record.PredictionRecord`.
"""
