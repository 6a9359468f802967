"""The delivered detector: `infer_config.json` + checkpoint + backbone ONNX, scored with no run directory (``defectflow infer``); the pipeline's predict step uses the same code."""
