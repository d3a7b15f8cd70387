"""``bopkd run-pipeline``: one resumable command from a dataset to a BOP-scored comparison report.

- :mod:`~bopkd.pipeline.engine`: the stage runner (records, settings hashes, resume, locks, logs), which
  knows nothing of pose estimation;
- :mod:`~bopkd.pipeline.plan`: which stages a preset and its options produce, and their settings;
- :mod:`~bopkd.pipeline.stages`: what each kind of stage does (an adapter to the library);
- :mod:`~bopkd.pipeline.presets`: the pipeline presets (``demo``, ``experiment``, ``study``, ``quick``,
  ``paper``);
- :mod:`~bopkd.pipeline.options`: the command's options and ``--set`` overrides;
- :mod:`~bopkd.pipeline.run`: :func:`run_pipeline`.
"""

from bopkd.pipeline.engine import RunLock, Stage, StageContext, StageOutput, StageStatus
from bopkd.pipeline.options import Overrides, PipelineOptions, parse_sets
from bopkd.pipeline.plan import Plan, build_plan, hashed_train_config
from bopkd.pipeline.presets import PIPELINE_PRESETS, PipelinePreset, Variant, get_preset
from bopkd.pipeline.run import PipelineResult, plan_forced, run_pipeline

__all__ = [
    "PIPELINE_PRESETS",
    "Overrides",
    "PipelineOptions",
    "PipelinePreset",
    "PipelineResult",
    "Plan",
    "RunLock",
    "Stage",
    "StageContext",
    "StageOutput",
    "StageStatus",
    "Variant",
    "build_plan",
    "get_preset",
    "hashed_train_config",
    "parse_sets",
    "plan_forced",
    "run_pipeline",
]
