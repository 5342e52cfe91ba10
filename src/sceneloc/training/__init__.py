"""Training: the one budgeted loop, the feature buffer, the head, FCN/U-Net and confidence trainers."""
