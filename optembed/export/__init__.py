"""Deploying a model outside the package: export bundles (ONNX, ``torch.export``) and scoring raw rows."""
