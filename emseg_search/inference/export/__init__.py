"""Export a model artifact to TorchScript or ONNX, verified against the eager model."""
