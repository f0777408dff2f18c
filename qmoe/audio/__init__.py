"""Audio front end: a sound becomes an embedding.

`decode` (any audio file -> 44.1 kHz mono float32, cut into the 5 s training windows) -> `spectrogram` (samples -> the
ESC-50 figure or another named recipe) -> `backbones` (the ImageNet CNN, on ONNX Runtime or torch) -> `embeddings`
(images -> vectors, cached on disk by content hash). May import the core only.

Kept light: importing this package imports nothing; each module imports torch/timm only where it needs them.
"""
