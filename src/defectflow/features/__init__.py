"""The backbone: building it from timm with packaged weights, exporting it to ONNX, running it (onnxruntime or torch), preprocessing, and the embeddings it stores."""
