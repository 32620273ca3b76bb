"""The error every datamodule raises, before training, when its data is missing or unreadable."""

from __future__ import annotations

import os
import pickle
from typing import Any, Optional, Union

__all__ = ["DATA_ERRORS", "DataNotFoundError"]

# Exceptions that torchvision's loaders raise on missing, truncated or corrupted files
# (torchvision reports a failed integrity check as RuntimeError, a short idx file as
# AssertionError/RuntimeError, a broken pickle as UnpicklingError/EOFError, a failed
# download as RuntimeError or urllib's URLError, which is an OSError).
DATA_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    OSError,
    ValueError,
    EOFError,
    AssertionError,
    KeyError,
    pickle.UnpicklingError,
)


class DataNotFoundError(FileNotFoundError):
    """The data of a datamodule is missing, could not be downloaded, or is unreadable.

    Attributes:
        dataset: human-readable name of the data set (``"CIFAR-10"``).
        directory: absolute path of the directory where the data was looked for.
        how_to_get: instructions to obtain the data.
        reason: optional detail (``"download failed: ..."``).
    """

    def __init__(
        self,
        dataset: str,
        directory: Union[str, os.PathLike],
        how_to_get: str,
        reason: Optional[str] = None,
    ) -> None:
        self.dataset = dataset
        self.directory = str(directory)
        self.how_to_get = how_to_get
        self.reason = reason
        detail = f": {reason}" if reason else ""
        message = (
            f"{dataset} data not found or not readable in {self.directory}{detail}.\n"
            f"How to get it: {how_to_get}"
        )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions are pickled through ``args``; ours has a richer signature (needed
        # when the error crosses a process boundary, e.g. in a dataloader worker or DDP).
        return (type(self), (self.dataset, self.directory, self.how_to_get, self.reason))

    def __str__(self) -> str:
        # OSError.__str__ would prefix "[Errno ...]" if errno/filename were ever set.
        return str(self.args[0]) if self.args else super().__str__()
