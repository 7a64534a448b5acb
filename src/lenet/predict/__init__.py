"""A trained model used: predictions, evaluation, layer activations, exports."""
