"""Trained models: full training, the model folder, export, the timm entry and text generation."""
