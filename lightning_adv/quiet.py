"""A quiet start: no third-party advertisement or dependency-internal deprecation notice before training.

:func:`quiet_start` is called by the command line (``train.py`` / ``lightning-adv``) before Lightning
builds its Trainer. Each silenced line is named here with its source and why it cannot be fixed in
this project; Lightning's informational lines (``GPU available: ...``, the model summary) stay.

* Lightning prints ``💡 Tip: ... try installing litlogger`` (``LoggerConnector.configure_logger``,
  whenever no ``LitLogger`` is used) and ``💡 Tip: ... try installing litmodels`` (the callback
  connector, when it adds a default ``ModelCheckpoint``) through ``rank_zero_info``, i.e. at INFO
  level on the logger ``lightning.pytorch.utilities.rank_zero``. Lightning has no switch for them;
  a :class:`logging.Filter` on that logger drops exactly the records that start with ``💡 Tip:``.
* torch >= 2.14 deprecates ``LeafSpec``, which Lightning 2.6's ``utilities/_pytree.py`` still
  instantiates (FutureWarning on the first batch); torch >= 2.14 deprecates ``torch.set_vital``, which
  torchdata 0.11's ``StatefulDataLoader.__init__`` still calls (UserWarning). Both are calls inside
  the dependencies, harmless (the replacement is used by torch itself), and fixed only by new
  releases of Lightning / torchdata; the filters match those two messages only, so any other warning,
  ours included, still shows.
* gym's "Gym has been unmaintained" banner is gone at the source: learn2learn is built without its
  gym import (``scripts/dev.sh``, docs/installation.md).
"""
from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_start", "AdvertFilter", "RANK_ZERO_LOGGERS"]

#: the loggers ``rank_zero_info`` writes to (``lightning`` and the standalone ``pytorch_lightning``)
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero")


class AdvertFilter(logging.Filter):
    """Drops Lightning's ``💡 Tip: ... try installing <product>`` records and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith("💡 Tip:")


def quiet_start() -> None:
    """Install the advertisement filter and the two dependency-deprecation filters (idempotent)."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, AdvertFilter) for f in logger.filters):
            logger.addFilter(AdvertFilter())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated", category=UserWarning,
                            module=r"torchdata\.")
