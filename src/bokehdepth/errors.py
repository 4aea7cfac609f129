"""One exception family for every user-facing failure.

Every message is a single line that names the offending file or flag and says how to fix it.
The CLI prints ``error: <message>`` on stderr and exits with code 2 for any :class:`BokehDepthError`.
"""

from __future__ import annotations

__all__ = [
    "BokehDepthError",
    "InputError",
    "CheckpointError",
    "MissingWeightsError",
    "OutputError",
]


class BokehDepthError(Exception):
    """Base class: a problem the user can fix (bad input, missing weights, unwritable output)."""

    def __init__(self, message: str):
        # One line, always: multi-line text is folded so `error:` stays a single line.
        super().__init__(" ".join(str(message).split()))


class InputError(BokehDepthError, ValueError):
    """Bad input: unreadable file, wrong shape, NaN/inf/negative depth, K out of range, ..."""


class OutputError(BokehDepthError):
    """An output could not be written (folder not writable, disk full)."""


class CheckpointError(BokehDepthError):
    """A checkpoint is corrupt, of the wrong layout, or does not match the model strictly."""


class MissingWeightsError(CheckpointError):
    """A released checkpoint is not on disk.

    Args:
        path: where it was looked for.
        repo: the Hugging Face repository that publishes it (``owner/name``).
        filename: file name inside that repository.
        local_dir: suggested local folder for the fetch command.
    """

    def __init__(self, path: str, repo: str, filename: str, local_dir: str = "weights"):
        self.path, self.repo, self.filename = str(path), repo, filename
        super().__init__(
            f"{path}: weights file not found; it is published as '{filename}' in the Hugging Face "
            f"repository {repo}; on a connected machine run: "
            f"hf download {repo} {filename} --local-dir {local_dir}  (then pass --weights {local_dir})"
        )
