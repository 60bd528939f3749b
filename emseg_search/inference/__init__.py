"""Using a trained model: the artifact format, the sliding-window predictor, prediction and
evaluation of micrographs, figures, and verified TorchScript/ONNX export. Never imports train or
search."""
