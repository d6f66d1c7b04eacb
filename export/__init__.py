"""Model export tools for edgeface: CLIP's image encoder and dlib's face ResNet to ONNX.

Run ``python -m export --help``. These tools need the ``export`` extra
(torch, open_clip_torch, transformers, onnx); the daemon never imports them.
"""
