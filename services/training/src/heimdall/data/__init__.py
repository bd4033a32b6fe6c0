"""From stored sessions to training tensors: receiver network, splits, feature cache, datasets."""
