"""User-facing errors: anything that should end a command with exit code 2 and one line."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix (config, file, option). The CLI prints it on one line, exit 2.

    ``where`` names the file, key or HDU at fault; the message says what is wrong and what to do.

    Parameters
    ----------
    message : str
        What is wrong and what to do.
    where : str, optional
        The file, key or HDU at fault; printed before the message.

    Attributes
    ----------
    exit_code : int
        The CLI's exit status for this error (2).
    message, where
        The constructor's arguments.
    """

    exit_code = 2

    def __init__(self, message: str, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(UserError):
    """A problem with the TOML config: ``where`` is ``FILE [section.key]``."""


class ResponseError(UserError):
    """A problem with an OGIP file (ARF, RMF, PHA, table model)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, ``scancel``, a Slurm time limit, ``mpirun`` passing it on).

    Raised by the CLI's SIGTERM handler so a command ends as it does on Ctrl-C, saying so,
    with exit status 143 (128 + SIGTERM, as a shell reports a process the signal killed); a
    batch script or a Slurm ``afterok`` dependency then sees a failure, not a success.

    Attributes
    ----------
    exit_code : int
        The CLI's exit status (143).
    """

    exit_code = 143


#: said after "interrupted" / "terminated": what survives and what to do
RESUME_HINT = (
    "; rerun the command without --overwrite (train: without --restart): simulate and train "
    "continue from what they saved"
)
