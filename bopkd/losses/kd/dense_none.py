"""Dense ``--kd none``: direct training of a dense student (ZebraPose's loss alone), no teacher, no terms."""

from __future__ import annotations

from bopkd.losses.kd.none import NoKD, NoKDConfig
from bopkd.losses.kd.registry import register_kd


@register_kd(
    "none",
    family="dense",
    config=NoKDConfig,
    summary="direct training of the dense student (no teacher)",
    terms=(),
    weight_key=None,
)
class DenseNoKD(NoKD):
    """Direct training of a dense student; ``forward`` returns no terms (:class:`~bopkd.losses.kd.none.NoKD`)."""
