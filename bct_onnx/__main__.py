"""Allow ``python -m bct_onnx`` as another name for the ``bct-onnx`` command."""

from bct_onnx.cli import main

main()
