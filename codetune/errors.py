"""User-facing errors. The CLI prints `str(error)` as one line and exits with `exit_code`."""


class CodetuneError(Exception):
    """A failure the user can act on; the message is one line and names what to change."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(CodetuneError):
    """Bad config key, value or override. Raised before any work is done."""

    exit_code = 2


class DataError(CodetuneError):
    """Unreadable or unusable input data (missing file, malformed JSONL, nothing left after filters)."""


class RefusedError(CodetuneError):
    """A run we refuse to start because it would fail or destroy something (OOM, foreign output_dir)."""

    exit_code = 3


class SandboxError(CodetuneError):
    """Isolation for executing generated code could not be set up."""
