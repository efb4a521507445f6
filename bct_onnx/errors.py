"""Exceptions that the command line turns into one line on stderr and a non-zero exit."""


class BctError(Exception):
    """Base class of the errors a user can act on: bad input, bad options, failed checks."""


class ModelLoadError(BctError):
    """The input is not a readable ONNX model."""


class UnsupportedModelError(BctError):
    """The model is valid ONNX but bct-onnx cannot compress it."""


class OutputError(BctError):
    """The output cannot be written where the user asked."""


class ValidationFailedError(BctError):
    """A compressed model missed a tolerance when compared with its float model."""


def first_line(error: BaseException) -> str:
    """Return the first line of an error message, or its repr when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)
