"""The model layer: backbones, the article's head, pretrained weights, which tensors a fine-tuning
strategy trains (head, partial, full, LoRA, BitFit, LP-FT), feature caching, and compressing the
trained model for small devices.
"""
