"""qmoe: curiosity-driven quantized Mixture-of-Experts for audio classification.

Audio -> mel-spectrogram figure -> ImageNet CNN embedding -> quantized MLP experts / MoE(-C).
"""
__version__ = "0.1.0"
